"""The dataset runner's errors for people (shown as is by the CLI)."""

from faceanon.errors import FaceAnonError


class DatasetError(FaceAnonError, ValueError):
    """A dataset job cannot start: Ray missing, a cluster that cannot be reached, a bad source."""


RAY_MISSING = (
    "Ray is not installed here, and `--ray` / faceanon.dataset need it. Install the optional extra: "
    "pip install 'faceanon[ray]' (or pip install -r requirements-ray.txt)."
)
