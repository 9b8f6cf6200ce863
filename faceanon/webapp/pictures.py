"""The "Detected faces" picture: numbered boxes whose labels never cover a face, selected or not."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

SELECTED = (255, 200, 0)  # amber: will be changed
LEFT_ALONE = (150, 150, 150)  # grey: left as is


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _overlap(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def _label_box(face_box, label_size, where: str, gap: int):
    x0, y0, x1, y1 = face_box
    w, h = label_size
    cx, cy = (x0 + x1 - w) / 2, (y0 + y1 - h) / 2
    return {
        "above": (x0, y0 - h - gap),
        "below": (x0, y1 + gap),
        "left": (x0 - w - gap, cy),
        "right": (x1 + gap, cy),
        "above-centre": (cx, y0 - h - gap),
    }[where]


def place_labels(boxes, sizes, image_size, gap: int = 2) -> list[tuple[float, float]]:
    """Top-left corners for one label per face: the first spot (above, below, left, right) inside
    the picture that covers no face and no label already placed; else the least covering one."""
    width, height = image_size
    placed: list[tuple] = []
    corners = []
    for box, (w, h) in zip(boxes, sizes, strict=True):
        best, best_cover = None, None
        for where in ("above", "below", "left", "right", "above-centre"):
            x, y = _label_box(box, (w, h), where, gap)
            x, y = min(max(0, x), width - w), min(max(0, y), height - h)
            rect = (x, y, x + w, y + h)
            cover = sum(_overlap(rect, other) for other in boxes) + sum(_overlap(rect, p) for p in placed)
            if best_cover is None or cover < best_cover:
                best, best_cover = rect, cover
            if cover == 0:
                break
        placed.append(best)
        corners.append(best[:2])
    return corners


def draw_faces(photo: Image.Image, faces, selected: set[int] | None = None) -> Image.Image:
    """A copy of the photo with a numbered box on each face: amber if selected, grey if not.

    Labels are sized for the face (small faces in a crowd get small labels) and placed beside the
    box so that they cover no face (place_labels)."""
    canvas = photo.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(max(canvas.size) / 500))
    largest = max(12, round(max(canvas.size) / 40))
    texts = [f"#{face.index}" for face in faces]
    fonts = [_font(int(min(largest, max(9, face.size * 0.35)))) for face in faces]
    sizes = []
    for text, font in zip(texts, fonts, strict=True):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        sizes.append((right - left + 4, bottom - top + 4))
    corners = place_labels([face.box for face in faces], sizes, canvas.size, gap=line + 1)
    for face, text, font, size, corner in zip(faces, texts, fonts, sizes, corners, strict=True):
        colour = SELECTED if selected is None or face.index in selected else LEFT_ALONE
        draw.rectangle(tuple(face.box), outline=colour, width=line)
        x, y = corner
        draw.rectangle((x, y, x + size[0], y + size[1]), fill=colour)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((x + 2 - left, y + 2 - top), text, fill=(0, 0, 0), font=font)
    return canvas


def face_at(faces: list[dict], x: float, y: float) -> int | None:
    """The index of the face whose box holds (x, y) (the smallest, if boxes nest); else the nearest
    face within one face size, so a click beside a small face in a crowd still finds it."""
    inside = [f for f in faces if f["box"][0] <= x <= f["box"][2] and f["box"][1] <= y <= f["box"][3]]
    if inside:
        return min(inside, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))["index"]
    best, best_distance = None, None
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        distance = ((x - (x0 + x1) / 2) ** 2 + (y - (y0 + y1) / 2) ** 2) ** 0.5
        if distance <= max(x1 - x0, y1 - y0) and (best_distance is None or distance < best_distance):
            best, best_distance = face["index"], distance
    return best
