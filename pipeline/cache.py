"""Digests and atomic file writes shared by every stage.

A stage key is the sha256 of canonical JSON (sorted keys, no whitespace) of the stage name,
its salt, the digests of its input files, its parameters and the identities of the tools it
runs. Outputs are written to a temporary name and renamed into place, so a killed stage
never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Iterator


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def digest(obj) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    # keep the extension last: some writers (TVM's write_to_file) dispatch on it
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{os.path.basename(path)}", dir=d)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json(path: str, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str):
    with open(path) as f:
        return json.load(f)
