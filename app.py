"""faceanon web app — the Hugging Face Space entry point (`python app.py`, or `faceanon serve`).

Serves on 127.0.0.1:7860 by default; see `python app.py --help`.
"""

import spaces  # noqa: F401, I001  (first: ZeroGPU must patch torch before CUDA is touched)

import importlib.util
import os
import subprocess
import sys


def install_no_deps_packages_on_a_space() -> None:
    """A Space installs requirements.txt only. The packages of requirements-nodeps.txt (watermark,
    landmarks, insightface) each declare another OpenCV build, so they are installed here without
    their dependencies, once, the way the README's set-up command does."""
    if os.environ.get("SPACE_ID") and importlib.util.find_spec("imwatermark") is None:
        requirements = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements-nodeps.txt")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-r", requirements], check=False)


install_no_deps_packages_on_a_space()

from faceanon.webapp.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
