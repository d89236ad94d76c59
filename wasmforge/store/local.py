"""The local content-addressed store every stage is cached in.

Bazel's model: a stage's *key* is the sha256 of canonical JSON (sorted keys, no whitespace)
of everything that can change its output (the digests of its input files, never their
mtimes; its parameters; the identities of the tools it runs; a digest of its own code).
Outputs live in a content-addressed store:

    <store>/cas/<sha256>     blobs, named by the digest of their bytes, verified when read
    <store>/ac/<key>         action results: JSON {outputs: {label: {sha256, size}}, result, ...}
    <store>/events.log       one line per lookup ("hit local", "hit remote", "miss")

Writes are atomic (temporary file in the same folder, then rename), so a killed process
never leaves an entry that looks finished, and two processes writing the same entry write
the same bytes under the same name: no corruption, no duplicates. A corrupted blob or
action entry is reported, evicted and rebuilt.

A build output and its blob are one file, hard-linked, when the store and the build folder
share a file system (as in Bazel, outputs are then read-only); otherwise they are copies.
Every byte of a model is stored once, not twice: ResNet-50's stages hold 2 GB. Stages never
write into a linked file: ``run_stage`` unlinks a stage's old outputs before running it, and
every restore verifies the blob's digest, so a file edited in place is caught and evicted.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time

from wasmforge import ROOT
from wasmforge.errors import warn
from wasmforge.store import files
from wasmforge.store.digests import canonical, file_sha256, hash_file
from wasmforge.store.files import link_or_copy, place, temp_name, write_bytes

DEFAULT_MAX = "10G"   # the store's size limit unless WASMFORGE_CACHE_MAX says otherwise ("0": none)


def size_limit(environ=None) -> int | None:
    """The store's size limit in bytes, from ``WASMFORGE_CACHE_MAX`` (``DEFAULT_MAX`` when
    unset; ``0`` turns the limit off: None)."""
    text = (os.environ if environ is None else environ).get("WASMFORGE_CACHE_MAX", DEFAULT_MAX)
    try:
        limit = parse_size(text)
    except ValueError:
        raise ValueError(f"WASMFORGE_CACHE_MAX={text!r} is not a size (e.g. 10G, 500M, 0 for no limit)") from None
    return limit or None


def default_store_dir() -> str:
    return os.path.abspath(os.environ.get("WASMFORGE_CACHE", os.path.join(ROOT, ".wasmforge-cache")))


class Store:
    """The local content-addressed store (CAS blobs + action cache)."""

    def __init__(self, root: str | None = None):
        self.root = os.path.abspath(root or default_store_dir())
        for sub in ("cas", "ac", "tmp", "locks"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    def _cas(self, sha: str) -> str:
        return os.path.join(self.root, "cas", sha)

    def _ac(self, key: str) -> str:
        return os.path.join(self.root, "ac", key)

    # -- blobs
    def has_blob(self, sha: str) -> bool:
        return os.path.isfile(self._cas(sha))

    def put_file(self, path: str, sha: str | None = None) -> str:
        """Store a file in the CAS (once per content), linked where possible; returns its
        digest. The stored file is made read-only (with a link, so is ``path``)."""
        sha = sha or file_sha256(path)
        dest = self._cas(sha)
        if not os.path.isfile(dest):
            with files.removed_unless_renamed(temp_name(os.path.join(self.root, "tmp"), sha)) as tmp:
                link_or_copy(path, tmp)
                if hash_file(tmp) != sha:   # the source changed under us: store nothing
                    raise OSError(f"{path} changed while it was being stored")
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
        return sha

    def put_stream(self, chunks, sha: str) -> bool:
        """Store bytes from an iterator (a download) if they hash to ``sha``."""
        try:
            files.atomic_stream(self._cas(sha), chunks, expect=(sha, None),
                                folder=os.path.join(self.root, "tmp"), mode=0o444)
        except files.ContentMismatch:
            return False
        return True

    def place_blob(self, sha: str, dest: str) -> bool:
        """Put blob ``sha`` at ``dest`` atomically (a link where possible), verifying its
        digest on the way. A blob whose bytes do not match its name is evicted (and _Corrupt
        raised)."""
        src = self._cas(sha)
        if not os.path.isfile(src):
            return False
        got = hash_file(src)   # a link's bytes are the blob's: verify them before placing
        if got != sha:
            warn(f"cache entry {src} is corrupted (its bytes hash to {got[:12]}…); evicted, rebuilding")
            self.evict_blob(sha)
            raise _Corrupt()
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        place(src, dest)
        return True

    def evict_blob(self, sha: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._cas(sha))

    def verify(self) -> list[str]:
        """Every problem in the store: a blob whose bytes do not match its name, an action
        entry that does not parse or names a blob the store lacks. Empty when sound."""
        problems = []
        cas = os.path.join(self.root, "cas")
        for name in sorted(os.listdir(cas)):
            if hash_file(os.path.join(cas, name)) != name:
                problems.append(f"blob {name}: its bytes do not match its name")
        ac = os.path.join(self.root, "ac")
        for key in sorted(os.listdir(ac)):
            try:
                with open(os.path.join(ac, key)) as f:
                    outputs = json.load(f)["outputs"]
                missing = [label for label, o in outputs.items() if not self.has_blob(o["sha256"])]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                problems.append(f"action {key}: unreadable ({type(e).__name__}: {e})")
                continue
            if missing:
                problems.append(f"action {key}: outputs {missing} have no blob")
        return problems

    # -- actions
    def get_action(self, key: str) -> dict | None:
        path = self._ac(key)
        try:
            with open(path) as f:
                entry = json.load(f)
            if not isinstance(entry.get("outputs"), dict):
                raise ValueError("no outputs")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            warn(f"cache entry {path} is unreadable ({e}); evicted, rebuilding")
            self.evict_action(key)
            return None
        os.utime(path)
        return entry

    def put_action(self, key: str, entry: dict) -> None:
        write_bytes(self._ac(key), canonical(entry))

    def evict_action(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._ac(key))

    # -- locking, events, management
    def in_use(self, key: str) -> bool:
        """Whether a build holds ``key``'s lock now (it is reading or writing that entry)."""
        path = os.path.join(self.root, "locks", key)
        if not os.path.exists(path):
            return False
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    @contextlib.contextmanager
    def lock(self, key: str):
        """Serialize work on one key across processes: the second waits, then hits."""
        with open(os.path.join(self.root, "locks", key), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def record(self, event: str, stage: str) -> None:
        line = f"{time.time():.3f} {event} {stage}\n".encode()
        fd = os.open(os.path.join(self.root, "events.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)   # one O_APPEND write: lines from concurrent builds never interleave
        finally:
            os.close(fd)

    def stats(self) -> dict:
        blobs = [os.path.join(self.root, "cas", n) for n in os.listdir(os.path.join(self.root, "cas"))]
        size = sum(os.path.getsize(b) for b in blobs)
        counts = {"hit local": 0, "hit remote": 0, "miss": 0}
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(self.root, "events.log")) as f:
                for line in f:
                    parts = line.split()
                    ev = " ".join(parts[1:-1])
                    if ev in counts:
                        counts[ev] += 1
        lookups = sum(counts.values())
        return {"root": self.root, "blobs": len(blobs), "bytes": size,
                "actions": len(os.listdir(os.path.join(self.root, "ac"))), "lookups": lookups,
                **{k.replace(" ", "_"): v for k, v in counts.items()},
                "hit_rate": (counts["hit local"] + counts["hit remote"]) / lookups if lookups else None}

    def trim(self, limit_bytes: int) -> dict:
        """Delete least recently used blobs until the CAS fits ``limit_bytes``; drop the
        action entries that referenced them, and stale temporary files. A blob was last used
        when an action entry naming it was (lookups touch entries, never blobs: a blob's
        times are those of the build outputs linked to it). A blob of an entry another build
        holds the lock of (``in_use``) is kept, whatever its age."""
        now = time.time()
        for n in os.listdir(os.path.join(self.root, "tmp")):
            p = os.path.join(self.root, "tmp", n)
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(p) > 3600:
                    os.unlink(p)
        used: dict[str, float] = {}
        entries: dict[str, set[str]] = {}
        for key in os.listdir(os.path.join(self.root, "ac")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
                path = self._ac(key)
                with open(path) as f:
                    shas = {o["sha256"] for o in json.load(f)["outputs"].values()}
                entries[key] = shas
                t = os.path.getmtime(path)
                for sha in shas:
                    used[sha] = max(used.get(sha, 0.0), t)
        busy = set().union(*(shas for key, shas in entries.items() if self.in_use(key)))
        blobs = []
        for n in os.listdir(os.path.join(self.root, "cas")):
            st = os.stat(os.path.join(self.root, "cas", n))
            if n not in used and now - st.st_mtime < 3600:
                busy.add(n)     # no entry names it yet: a stage may be storing its outputs now
            blobs.append((used.get(n, st.st_mtime), st.st_size, n))
        blobs.sort()
        total = sum(b[1] for b in blobs)
        removed = set()
        for _, size, n in blobs:
            if total <= limit_bytes:
                break
            if n in busy:
                continue
            self.evict_blob(n)
            removed.add(n)
            total -= size
        dropped = 0
        for key, shas in entries.items():
            if shas & removed:
                self.evict_action(key)
                dropped += 1
        return {"removed_blobs": len(removed), "removed_actions": dropped, "bytes": total}


class _Corrupt(Exception):
    pass


def restore(store: Store, entry: dict, paths: dict[str, str]) -> bool:
    """Materialize every output of an action entry at ``paths`` (label -> path). False when a
    blob is missing or corrupted (then nothing can be trusted: the caller rebuilds)."""
    if set(entry["outputs"]) != set(paths):
        return False
    if not all(store.has_blob(o["sha256"]) for o in entry["outputs"].values()):
        return False
    try:
        for label, out in entry["outputs"].items():
            store.place_blob(out["sha256"], paths[label])
    except _Corrupt:
        return False
    return True


def parse_size(text: str) -> int:
    """'500M', '2G', '1048576' -> bytes."""
    t = text.strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def trim_to_limit(store: Store | None = None) -> str:
    """After a build: trim the store to its size limit (``size_limit``), least recently used
    first. Returns what it did, in a line ("" when the store fits)."""
    limit = size_limit()
    store = store or Store()
    if limit is None:
        return ""
    result = store.trim(limit)
    if not result["removed_blobs"]:
        return ""
    return (f"store {store.root} over its limit ({limit:,} bytes, WASMFORGE_CACHE_MAX): removed "
            f"{result['removed_blobs']} blobs and {result['removed_actions']} entries, now {result['bytes']:,} bytes")

