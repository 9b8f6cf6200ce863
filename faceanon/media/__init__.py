"""The media layer: files in, frames out, frames in, files out.

    photo.py    still images: safe loading (EXIF orientation, modes, limits), metadata-free saving
    video.py    videos: streamed decoding / encoding (PyAV), timing and audio kept, no metadata
    atomic.py   every output written to a temporary name and moved into place when complete

The anonymizer below works on frames (RGB arrays + faces + per-face seeds); front ends above
(CLI, web app, dataset runner) call this layer and the anonymizer, never the engine.
"""
