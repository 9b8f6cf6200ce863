"""Gradio components with faceanon's behaviour on top of the stock ones."""

from __future__ import annotations

import os

import gradio as gr
from PIL import Image, UnidentifiedImageError

from faceanon.webapp.limits import READABLE_FORMATS
from faceanon.webapp.uploads import REFUSALS, UnreadableUpload


def unreadable_reason(payload) -> str:
    refused = REFUSALS.get(getattr(payload, "path", None))
    if refused:
        return refused
    name = os.path.basename(getattr(payload, "orig_name", None) or "")
    what = f"“{name}”" if name else "This file"
    return f"{what} is not an image faceanon can read. Upload a photo as {READABLE_FORMATS}."


def KeepPhotos(label: str, elem_id: str) -> gr.File:  # noqa: N802  (reads like the component)
    """The keep-list upload of the Anonymize and Video tabs: photos of people to leave untouched."""
    return gr.File(label=label, file_count="multiple", file_types=["image"], type="filepath", elem_id=elem_id)


def PhotoInput(**kwargs) -> gr.Image:  # noqa: N802  (reads like the component it builds)
    """`gr.Image` (as a file path) that answers a non-image upload with a plain message.

    The stock component lets PIL's "cannot identify image file '/tmp/...'" through, which tells a
    person nothing and leaks a server path. (A subclass would make Gradio write a .pyi stub beside
    this file, so the instance's preprocess is wrapped instead.)
    """
    kwargs.setdefault("type", "filepath")
    kwargs.setdefault("image_mode", None)  # keep the upload as is; faceanon converts it
    kwargs.setdefault("sources", ["upload", "webcam", "clipboard"])
    component = gr.Image(**kwargs)
    stock_preprocess = component.preprocess

    def preprocess(payload):
        if payload is not None and REFUSALS.get(getattr(payload, "path", None)):
            return UnreadableUpload(unreadable_reason(payload))
        try:
            return stock_preprocess(payload)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            return UnreadableUpload(unreadable_reason(payload))

    component.preprocess = preprocess
    return component
