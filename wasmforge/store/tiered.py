"""The local store, then the team's remote one: Bazel's disk-and-remote cache rule, in one
place (``bazel``'s ``DiskAndRemoteCacheClient``).

A lookup asks the local store first, then the remote; an entry the remote had is copied
into the local store (its blobs already are, verified, by the time it is used). A result
built before the remote was configured is uploaded when next looked up. A new result goes
to both. The remote can only make a build faster: every remote failure is a warning
(``remote.py``), never a failed or poisoned build.
"""
from __future__ import annotations

import contextlib
import os

from wasmforge.store.local import Store, restore
from wasmforge.store.remote import Remote


class TieredStore:
    def __init__(self, local: Store, remote: Remote | None):
        self.local, self.remote = local, remote

    def lock(self, key: str):
        return self.local.lock(key)

    def restore(self, key: str, outputs: dict[str, str]) -> tuple[dict | None, str]:
        """Put a stored result's outputs at ``outputs`` (label -> path). Returns the entry
        and where it came from ("hit local", "hit remote"), or (None, "miss")."""
        local, remote = self.local, self.remote
        entry, source = local.get_action(key), "hit local"
        if entry is None and remote is not None:
            entry, source = remote.get_action(key), "hit remote"
            if entry is not None and not all(local.has_blob(o["sha256"]) or remote.fetch_blob(local, o["sha256"])
                                             for o in entry["outputs"].values()):
                entry = None
        if entry is None or not restore(local, entry, outputs):
            return None, "miss"
        if source == "hit remote":
            local.put_action(key, entry)
        elif remote is not None and remote.upload and remote.get_action(key) is None:
            remote.put(local, key, entry)   # built before the team's remote was configured
        return entry, source

    @staticmethod
    def clear(outputs: dict[str, str]) -> None:
        """Remove a stage's old outputs before it runs: they may be links into the store, and
        tools write in place."""
        for path in outputs.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def save(self, key: str, stage: str, outputs: dict[str, str], result, seconds: float) -> dict:
        """Store a stage's fresh outputs and result, locally and on the remote."""
        entry = {"stage": stage, "result": result, "seconds": seconds,
                 "outputs": {label: {"sha256": self.local.put_file(path), "size": os.path.getsize(path)}
                             for label, path in outputs.items()}}
        self.local.put_action(key, entry)
        if self.remote is not None:
            self.remote.put(self.local, key, entry)
        return entry
