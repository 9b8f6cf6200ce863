"""Datasets beyond one machine: `faceanon anonymize SRC -o OUT --ray [ADDRESS]` on Ray Data.

    from faceanon.dataset import anonymize_dataset, read_audit
    result = anonymize_dataset("photos/", "anonymized/", seed=7, degree=1.25)
    print(result.summary())
    files, faces = read_audit("anonymized/")      # pandas: one row per file, one row per face

Modules: sources (what is read, item keys, output names), worker (the map_batches callable class),
audit (the Parquet audit tables, resume), runner (Ray: connect, read, map, summarize). Ray and
pyarrow are the optional extra `faceanon[ray]`; importing a name here without them raises a
DatasetError that says how to install them.
"""

from __future__ import annotations

import importlib

from faceanon.dataset.errors import RAY_MISSING, DatasetError

_EXPORTS = {
    "anonymize_dataset": "faceanon.dataset.runner",
    "DatasetResult": "faceanon.dataset.runner",
    "read_audit": "faceanon.dataset.audit",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'faceanon.dataset' has no attribute {name!r}")
    try:
        module = importlib.import_module(_EXPORTS[name])
    except ModuleNotFoundError as error:
        if error.name in ("ray", "pyarrow"):
            raise DatasetError(RAY_MISSING) from None
        raise
    return getattr(module, name)


__all__ = ["anonymize_dataset", "DatasetResult", "read_audit", "DatasetError"]
