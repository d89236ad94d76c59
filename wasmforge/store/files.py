"""Files written atomically: a temporary file beside the target, renamed over it only once
complete, so a reader (or a killed writer) sees the old file or the new one, never half.
``place`` puts a file's bytes at a new name the same way, as a hard link where it can;
``atomic_stream`` writes a stream (a download, a copy) while hashing it, and keeps it only
if it is the content that was expected.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Iterable, Iterator

CHUNK = 1 << 20


class ContentMismatch(ValueError):
    """``atomic_stream`` got other bytes than ``expect`` said; nothing was kept."""


def read_chunks(f, size: int = CHUNK) -> Iterator[bytes]:
    """A binary file object (or HTTP response) as a stream of chunks, until EOF."""
    while chunk := f.read(size):
        yield chunk


@contextlib.contextmanager
def removed_unless_renamed(tmp: str) -> Iterator[str]:
    """Yield ``tmp``; remove it at the end unless it was renamed away (the write failed)."""
    try:
        yield tmp
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _new_temp(folder: str, suffix: str = "") -> str:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def _rename_into_place(tmp: str, path: str, mode: int | None = None) -> None:
    if mode is None:   # mkstemp makes 0600; artifacts are ordinary files
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    # keep the extension last: some writers (TVM's write_to_file) dispatch on it
    tmp = _new_temp(os.path.dirname(os.path.abspath(path)), f"-{os.path.basename(path)}")
    with removed_unless_renamed(tmp):
        yield tmp
        _rename_into_place(tmp, path)


def atomic_stream(path: str | Callable[[str], str], chunks: Iterable[bytes],
                  expect: tuple[str, int | None] | None = None, folder: str | None = None,
                  mode: int | None = None) -> tuple[str, int]:
    """Write ``chunks`` to ``path`` atomically (synced to disk), hashing them on the way;
    return (sha256 hex, size).

    ``expect`` = (sha256 hex, size or None): the file is kept only if the bytes match, else
    ``ContentMismatch`` (raised as soon as the stream runs past ``size``). ``path`` may be a
    function of the sha256 hex, for content-addressed files whose name is known only at the
    end; then give ``folder`` (where the temporary file goes: the same file system as the
    final name). ``mode``: the file's permissions (default: an ordinary file, per umask).
    """
    folder = folder or os.path.dirname(os.path.abspath(path))
    want_sha, want_size = expect or (None, None)
    with removed_unless_renamed(_new_temp(folder)) as tmp:
        h, size = hashlib.sha256(), 0
        with open(tmp, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if want_size is not None and size > want_size:
                    raise ContentMismatch(f"more than the expected {want_size} bytes")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        sha = h.hexdigest()
        if expect and (sha != want_sha or want_size not in (None, size)):
            wanted = f" ({want_size} bytes)" if want_size is not None else ""
            raise ContentMismatch(f"content does not match: got sha256:{sha} ({size} bytes), "
                                  f"expected sha256:{want_sha}{wanted}")
        _rename_into_place(tmp, path(sha) if callable(path) else path, mode)
        return sha, size


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` at the new name ``dst``; copy where linking is impossible (another
    file system, or one without links)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def temp_name(folder: str, base: str) -> str:
    return os.path.join(folder, f".tmp-{os.getpid()}-{time.monotonic_ns()}-{base}")


def place(src: str, dest: str) -> None:
    """Give ``dest`` the bytes of ``src`` atomically: a link where possible (both then
    keep ``src``'s permissions), else a copy."""
    with removed_unless_renamed(temp_name(os.path.dirname(os.path.abspath(dest)),
                                           os.path.basename(dest))) as tmp:
        link_or_copy(src, tmp)
        os.replace(tmp, dest)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def json_bytes(obj) -> bytes:
    """Readable JSON (indented, sorted keys, final newline): what ``write_json`` writes."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(path: str, obj) -> None:
    write_bytes(path, json_bytes(obj))


def read_json(path: str):
    with open(path) as f:
        return json.load(f)
