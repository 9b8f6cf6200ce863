"""Errors meant for people. Every front end (library, CLI, web app) shows `str(error)` as is, so
each message says what happened and what to do about it."""


class FaceAnonError(Exception):
    """Base class of faceanon's user-facing errors."""


class ImageInputError(FaceAnonError, ValueError):
    """An input image cannot be read or is not acceptable (format, size, decompression bomb)."""


class WeightsNotFoundError(FaceAnonError, FileNotFoundError):
    """The diffusion weights are not available locally and cannot be downloaded."""


class MethodProcessorsMissingError(FaceAnonError, RuntimeError):
    """The method's attention processors were replaced on a UNet: the pipeline would compute
    something else than the method."""


class FaceTooSmallError(FaceAnonError, ValueError):
    """A face is too small for the diffusion model to produce a meaningful new identity."""


class UnsupportedOptionError(FaceAnonError, ValueError):
    """An option this machine cannot honour (GPU offload on a CPU, xformers not installed...)."""


class VideoInputError(FaceAnonError, ValueError):
    """An input video cannot be read (not a video, no video stream, truncated, unsupported codec)."""
