"""Model declarations. Every ``*.py`` and ``*.toml`` file in this folder declares models
with the DSL in ``wasmforge/dsl.py``; ``load()`` reads them all once.

Extra declaration folders can be named in ``WASMFORGE_MODELS`` (separated by ``:``); their
``*.py`` files are executed and their ``*.toml`` files read the same way.
"""
from __future__ import annotations

import glob
import os
import runpy
import traceback

from wasmforge import ROOT, dsl

_HERE = os.path.join(ROOT, "models")
_loaded = False


def declaration_dirs() -> list[str]:
    extra = [d for d in os.environ.get("WASMFORGE_MODELS", "").split(os.pathsep) if d]
    return [_HERE, *extra]


def run_python(path: str) -> None:
    """Execute one Python declaration file; whatever it raises becomes one line naming the
    file and the line (a model() call's own errors already name them)."""
    try:
        runpy.run_path(path, run_name=f"models.{os.path.splitext(os.path.basename(path))[0]}")
    except dsl.DeclarationError:
        raise
    except SyntaxError as e:
        raise dsl.DeclarationError(f"{path}: line {e.lineno}: SyntaxError: {e.msg}") from None
    except Exception as e:   # the declaration's own code failed: say where
        tb = traceback.extract_tb(e.__traceback__)
        line = next((f.lineno for f in reversed(tb) if os.path.abspath(f.filename) == os.path.abspath(path)), None)
        where = f"line {line}: " if line else ""
        raise dsl.DeclarationError(f"{path}: {where}{type(e).__name__}: {e}") from None


def load() -> dict[str, dsl.Model]:
    global _loaded
    if not _loaded:
        for d in declaration_dirs():
            if not os.path.isdir(d):
                raise dsl.DeclarationError(f"{d}: WASMFORGE_MODELS names a folder that does not exist")
            for path in sorted(glob.glob(os.path.join(d, "*.py"))):
                if os.path.basename(path) != "__init__.py":
                    run_python(path)
            for path in sorted(glob.glob(os.path.join(d, "*.toml"))):
                dsl.model_from_toml(path)
        _loaded = True
    return dsl.REGISTRY
