"""sha256 digests: of canonical JSON (cache keys, OCI documents), of bytes, and of files.

``file_sha256`` is the one file digest of the project, memoized by (path, size, mtime_ns) in
memory and, once ``set_digest_memo`` names a file, across processes: a no-op build hashes
nothing, and ``touch`` costs one re-hash. ``hash_file`` reads the bytes every time: what
verifies a blob before it is trusted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

from wasmforge.store.files import read_chunks, write_bytes


def canonical(obj) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal objects give equal bytes (and digests),
    whatever the dict insertion order. Cache keys and OCI documents are both this."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(obj) -> str:
    return digest_bytes(canonical(obj))


def hash_file(path: str) -> str:
    """sha256 of a file's bytes, read now (no memo): what verifies a blob."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in read_chunks(f):
            h.update(chunk)
    return h.hexdigest()


_MEMO: dict[str, tuple[int, int, str]] = {}
_MEMO_FILE: str | None = None
_MEMO_DIRTY = False


def set_digest_memo(path: str | None) -> None:
    """Remember file digests across processes in ``path`` (the build folder's
    ``.digests.json``), keyed by (size, mtime): a no-op build hashes nothing."""
    global _MEMO_FILE, _MEMO
    _MEMO_FILE = path
    _MEMO = {}
    if path:
        try:
            with open(path) as f:
                _MEMO = {k: tuple(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            _MEMO = {}


def save_digest_memo() -> None:
    global _MEMO_DIRTY
    if _MEMO_FILE and _MEMO_DIRTY:
        with contextlib.suppress(OSError):
            write_bytes(_MEMO_FILE, json.dumps(_MEMO).encode())
        _MEMO_DIRTY = False


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes; memoized by (path, size, mtime_ns), so ``touch`` costs one
    re-hash and yields the same digest."""
    global _MEMO_DIRTY
    st = os.stat(path)
    ap = os.path.abspath(path)
    m = _MEMO.get(ap)
    if m and m[0] == st.st_size and m[1] == st.st_mtime_ns:
        return m[2]
    d = hash_file(path)
    _MEMO[ap] = (st.st_size, st.st_mtime_ns, d)
    _MEMO_DIRTY = True
    return d
