"""Model declarations. Every ``*.py`` and ``*.toml`` file in this folder declares models
with the DSL in ``wasmforge/dsl.py``; ``load()`` reads them all once.

Extra declaration folders can be named in ``WASMFORGE_MODELS`` (separated by ``:``); their
``*.py`` files are executed and their ``*.toml`` files read the same way.
"""
from __future__ import annotations

import glob
import os
import runpy

from wasmforge import ROOT, dsl

_HERE = os.path.join(ROOT, "models")
_loaded = False


def declaration_dirs() -> list[str]:
    extra = [d for d in os.environ.get("WASMFORGE_MODELS", "").split(os.pathsep) if d]
    return [_HERE, *extra]


def load() -> dict[str, dsl.Model]:
    global _loaded
    if not _loaded:
        for d in declaration_dirs():
            if not os.path.isdir(d):
                raise dsl.DeclarationError(f"{d}: WASMFORGE_MODELS names a folder that does not exist")
            for path in sorted(glob.glob(os.path.join(d, "*.py"))):
                if os.path.basename(path) != "__init__.py":
                    runpy.run_path(path, run_name=f"models.{os.path.splitext(os.path.basename(path))[0]}")
            for path in sorted(glob.glob(os.path.join(d, "*.toml"))):
                dsl.model_from_toml(path)
        _loaded = True
    return dsl.REGISTRY
