"""faceanon web app — the Hugging Face Space entry point (`python app.py`, or `faceanon serve`).

Serves on 127.0.0.1:7860 by default; see `python app.py --help`.
"""

import spaces  # noqa: F401, I001  (first: ZeroGPU must patch torch before CUDA is touched)

from faceanon.webapp.server import main

if __name__ == "__main__":
    main()
