"""Model declarations. Every ``*.py`` and ``*.toml`` file in this folder declares models
with the DSL in ``pipeline/dsl.py``; ``load()`` reads them all once."""
from __future__ import annotations

import glob
import importlib
import os

from pipeline import dsl

_HERE = os.path.dirname(os.path.abspath(__file__))
_loaded = False


def load() -> dict[str, dsl.Model]:
    global _loaded
    if not _loaded:
        for path in sorted(glob.glob(os.path.join(_HERE, "*.py"))):
            mod = os.path.splitext(os.path.basename(path))[0]
            if mod != "__init__":
                importlib.import_module(f"models.{mod}")
        for path in sorted(glob.glob(os.path.join(_HERE, "*.toml"))):
            dsl.model_from_toml(path)
        _loaded = True
    return dsl.REGISTRY
