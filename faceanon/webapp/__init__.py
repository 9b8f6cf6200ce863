"""faceanon's web app (Gradio): the page, its named API (/anonymize, /swap, /detect) and its limits.

`app.py` at the repository root is the Hugging Face Space entry point; it calls `main()` from here,
so `faceanon serve` works from an installed package too.
"""

from __future__ import annotations


def main(argv=None):
    """Parse the command line and serve the app (see `faceanon.webapp.server`)."""
    from faceanon.webapp.server import main as _main

    return _main(argv)


__all__ = ["main"]
