"""A shared remote cache speaking Bazel's HTTP cache protocol.

    GET/PUT <url>/cas/<sha256>   blobs (the server may check that the body hashes to the name)
    GET/PUT <url>/ac/<key>       our action entries (JSON)

Any server speaking it backs a team: nginx with WebDAV (``dav_methods PUT``), or
``bazel-remote --disable_http_ac_validation`` (its AC otherwise only takes Bazel protobufs).

Configuration, from the environment only:
    WASMFORGE_REMOTE_CACHE           http(s)://host:port/prefix   (unset: no remote)
    WASMFORGE_REMOTE_CACHE_TOKEN     sent as "Authorization: Bearer <token>"
    WASMFORGE_REMOTE_CACHE_USER / WASMFORGE_REMOTE_CACHE_PASSWORD   basic auth instead
    WASMFORGE_REMOTE_CACHE_UPLOAD=0  read only (e.g. for untrusted CI jobs)
Credentials are never printed or stored, and never follow a redirect (``http_client``):
messages show the URL without its userinfo.

The remote can only make a build faster, never fail or poison it: an unreachable or
misbehaving server, or a blob whose bytes do not hash to its name, is a warning, after which
the build goes on locally and the remote is not asked again in this process.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse

from wasmforge.errors import warn
from wasmforge.http_client import basic, open_url, redact, url_credentials
from wasmforge.store import digests, files, local

TIMEOUT = float(os.environ.get("WASMFORGE_REMOTE_CACHE_TIMEOUT", "30"))


class Remote:
    def __init__(self, url: str, authorization: str | None = None, upload: bool = True):
        """``authorization``: the ``Authorization`` header's value, sent to this server only."""
        p = urllib.parse.urlsplit(url)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"WASMFORGE_REMOTE_CACHE must be an http(s) URL, got {redact(url)!r}")
        in_url = url_credentials(url)   # credentials in the URL: moved to the header
        self.authorization = basic(*in_url) if in_url else authorization
        self.base = redact(url).rstrip("/")
        self.upload = upload
        self.broken = False

    @classmethod
    def from_env(cls) -> "Remote | None":
        url = os.environ.get("WASMFORGE_REMOTE_CACHE")
        if not url:
            return None
        authorization = None
        if os.environ.get("WASMFORGE_REMOTE_CACHE_TOKEN"):
            authorization = "Bearer " + os.environ["WASMFORGE_REMOTE_CACHE_TOKEN"]
        elif os.environ.get("WASMFORGE_REMOTE_CACHE_USER"):
            authorization = basic(os.environ["WASMFORGE_REMOTE_CACHE_USER"],
                                  os.environ.get("WASMFORGE_REMOTE_CACHE_PASSWORD", ""))
        try:
            return cls(url, authorization, upload=os.environ.get("WASMFORGE_REMOTE_CACHE_UPLOAD", "1") != "0")
        except ValueError as e:
            warn(f"remote cache disabled: {e}")
            return None

    def _fail(self, what: str, err: Exception) -> None:
        if not self.broken:
            detail = f"HTTP {err.code}" if isinstance(err, urllib.error.HTTPError) else type(err).__name__
            warn(f"remote cache {self.base}: {what} failed ({detail}); building locally "
                       "and not using the remote cache for the rest of this run")
        self.broken = True

    def _request(self, method: str, path: str, data=None, length: int | None = None):
        headers = {} if length is None else {"Content-Length": str(length),
                                              "Content-Type": "application/octet-stream"}
        return open_url(method, f"{self.base}/{path}", timeout=TIMEOUT, data=data, headers=headers,
                        authorization=self.authorization)

    def get_action(self, key: str) -> dict | None:
        if self.broken:
            return None
        try:
            with self._request("GET", f"ac/{key}") as r:
                entry = json.loads(r.read())
            if not isinstance(entry, dict) or not isinstance(entry.get("outputs"), dict):
                raise ValueError("not an action entry")
            return entry
        except urllib.error.HTTPError as e:
            if e.code != 404:
                self._fail(f"GET ac/{key[:12]}…", e)
        except (OSError, ValueError) as e:
            self._fail(f"GET ac/{key[:12]}…", e)
        return None

    def fetch_blob(self, store: local.Store, sha: str) -> bool:
        """Download blob ``sha`` into the local store; False (with a warning) when the server
        does not have it or sends bytes that do not hash to ``sha``."""
        if self.broken:
            return False
        try:
            with self._request("GET", f"cas/{sha}") as r:
                ok = store.put_stream(files.read_chunks(r), sha)
            if not ok:
                warn(f"remote cache {self.base}: cas/{sha[:12]}… does not match its digest; ignored")
            return ok
        except urllib.error.HTTPError as e:
            if e.code != 404:
                self._fail(f"GET cas/{sha[:12]}…", e)
        except OSError as e:
            self._fail(f"GET cas/{sha[:12]}…", e)
        return False

    def put(self, store: local.Store, key: str, entry: dict) -> None:
        """Upload the blobs, then the action entry (last, so a reader never sees an entry
        whose blobs are missing)."""
        if self.broken or not self.upload:
            return
        try:
            for out in entry["outputs"].values():
                sha = out["sha256"]
                path = os.path.join(store.root, "cas", sha)
                with open(path, "rb") as f:
                    self._request("PUT", f"cas/{sha}", data=f, length=os.path.getsize(path)).close()
            body = digests.canonical(entry)
            self._request("PUT", f"ac/{key}", data=body, length=len(body)).close()
        except (OSError, urllib.error.HTTPError) as e:
            self._fail(f"PUT ac/{key[:12]}…", e)
