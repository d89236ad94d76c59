"""Push and pull OCI image layouts (``oci_layout``) to and from a registry speaking the OCI
distribution API, with the Python standard library only.

Why OCI: every team already runs a registry (ghcr.io, Harbor, ECR, a plain ``registry:2``)
that stores versioned, content-addressed, access-controlled artifacts, and Wasm runtimes
(wasmtime, Spin, wasmCloud, containerd shims) pull modules from one.

Safety rules the code keeps:
* blobs before the manifest, so a failed push never leaves a tag pointing at something missing;
* every digest is checked: local blobs before pushing, everything pulled before it is kept,
  and the registry's ``Docker-Content-Digest`` against our own;
* credentials go in headers only, are not sent along redirects (blob downloads are often
  redirected to a storage bucket; ``wasmforge.http_client``) and never appear in messages:
  URLs in errors are shown without userinfo or query string, and the password is scrubbed
  from any server text we quote.

Credentials come from the caller or from WASMFORGE_REGISTRY_USER / WASMFORGE_REGISTRY_PASSWORD
(``auth_from_env``). Both HTTP basic auth (htpasswd registries) and the token flow
(``401 WWW-Authenticate: Bearer realm=...`` as used by Docker Hub, ghcr.io, Harbor) work.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.parse

from wasmforge.http_client import basic, open_url, redact, url_credentials
from wasmforge.release.oci_layout import (
    DIGEST,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST,
    OciError,
    blob_path,
    blobs,
    check_tag,
    finish_layout,
    parse_manifest,
    read_layout,
    sha256_digest,
    write_blob,
)
from wasmforge.store import files

# everything a tag may point at, so tag_exists reports the digest the registry really stores
# (asked for only one type, distribution 2.x may convert a Docker manifest and change its digest)
ANY_MANIFEST = (f"{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}, "
                "application/vnd.docker.distribution.manifest.v2+json, "
                "application/vnd.docker.distribution.manifest.list.v2+json")

TIMEOUT = float(os.environ.get("WASMFORGE_REGISTRY_TIMEOUT", "60"))

_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")


# --------------------------------------------------------------------------- small pure helpers

def upload_url(request_url: str, location: str, digest: str) -> str:
    """The URL that completes a monolithic upload: the POST's ``Location`` (relative or absolute,
    possibly already carrying a query string of upload state) plus ``digest=<digest>``."""
    p = urllib.parse.urlsplit(urllib.parse.urljoin(request_url, location))
    extra = urllib.parse.urlencode({"digest": digest})
    query = f"{p.query}&{extra}" if p.query else extra
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, query, ""))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://a/token",service="reg",scope="repository:x:pull"`` ->
    ``("bearer", {"realm": ..., "service": ..., "scope": ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): (quoted if quoted or not bare else bare)
              for k, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return scheme.lower(), params


def auth_from_env(environ=None) -> tuple[str, str] | None:
    """``(user, password)`` from WASMFORGE_REGISTRY_USER / WASMFORGE_REGISTRY_PASSWORD, or None
    when neither is set. Only one of them set is a configuration mistake, reported as such
    rather than silently pushing anonymously."""
    env = os.environ if environ is None else environ
    user, password = env.get("WASMFORGE_REGISTRY_USER"), env.get("WASMFORGE_REGISTRY_PASSWORD")
    if not user and not password:
        return None
    if not user or not password:
        missing = "WASMFORGE_REGISTRY_PASSWORD" if user else "WASMFORGE_REGISTRY_USER"
        raise OciError("environment", f"{missing} is not set (registry credentials need both "
                                      "WASMFORGE_REGISTRY_USER and WASMFORGE_REGISTRY_PASSWORD)")
    return user, password


def _check_repository(repository: str, where: str) -> None:
    if not isinstance(repository, str) or not _REPOSITORY.fullmatch(repository):
        raise OciError(where, f"invalid repository name {repository!r} (lowercase path components "
                              "of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/')")


def _registry_base(registry: str, insecure_http: bool) -> tuple[str, tuple[str, str] | None]:
    """``host:port`` or ``http(s)://[user:pw@]host:port`` -> (``scheme://host:port``, userinfo
    auth). A bare host means https unless ``insecure_http`` (loopback/CI registries)."""
    text = registry.strip().rstrip("/")
    if "://" not in text:
        text = ("http://" if insecure_http else "https://") + text
    p = urllib.parse.urlsplit(text)
    if p.scheme not in ("http", "https") or not p.hostname or p.path or p.query:
        raise OciError(redact(text), "registry must be host[:port] or http(s)://host[:port] "
                                     "(the repository is a separate argument)")
    if p.scheme == "http" and not insecure_http:
        raise OciError(redact(text), "plain http registry but insecure_http=False")
    return redact(text), url_credentials(text)


def _problem(status: int, body: bytes) -> str:
    """``HTTP 400 MANIFEST_INVALID: manifest invalid`` from the distribution error format,
    or the start of whatever text the server sent."""
    reason = http.client.responses.get(status, "")
    text = ""
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError, TypeError):
        text = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status} {reason}" + (f" ({text})" if text else "")


def _check_server_digest(headers, expected: str, url: str) -> None:
    got = headers.get("Docker-Content-Digest")
    if got and got != expected:
        raise OciError(url, f"registry reports digest {got}, expected {expected}")


# --------------------------------------------------------------------------- HTTP

class _Response:
    def __init__(self, url, status, headers, fp):
        self.url, self.status, self.headers, self.fp = url, status, headers, fp

    def read(self, limit: int = MAX_MANIFEST) -> bytes:
        try:
            data = self.fp.read(limit + 1) if self.fp else b""
        finally:
            self.close()
        if len(data) > limit:
            raise OciError(self.url, f"response larger than {limit} bytes")
        return data

    def close(self):
        if self.fp:
            self.fp.close()


class _Client:
    """One registry + repository, with its credentials and the current bearer token."""

    def __init__(self, registry: str, repository: str, auth, insecure_http: bool, timeout=TIMEOUT):
        self.base, url_auth = _registry_base(registry, insecure_http)
        _check_repository(repository, self.base)
        self.repository = repository
        self.auth = tuple(auth) if auth else url_auth
        self.token: str | None = None
        self.timeout = timeout

    def url(self, tail: str) -> str:
        return f"{self.base}/v2/{self.repository}/{tail}"

    def _scrub(self, text: str) -> str:
        if self.auth and self.auth[1]:
            text = text.replace(self.auth[1], "***")
        return text

    def _once(self, method, url, headers, body, authorization) -> _Response:
        """One HTTP exchange. ``body`` is bytes, or a file path (streamed, reopened on a retry)."""
        if isinstance(body, str):
            with open(body, "rb") as f:
                headers = {**(headers or {}), "Content-Length": str(os.fstat(f.fileno()).st_size)}
                return self._exchange(method, url, headers, f, authorization)
        return self._exchange(method, url, headers or {}, body, authorization)

    def _exchange(self, method, url, headers, data, authorization) -> _Response:
        try:   # the credentials never follow a redirect to another host (storage)
            resp = open_url(method, url, timeout=self.timeout, data=data, headers=headers,
                            authorization=authorization)
            return _Response(url, resp.status, resp.headers, resp)
        except urllib.error.HTTPError as e:
            return _Response(url, e.code, e.headers, e)
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise OciError(url, self._scrub(f"{method} failed, registry unreachable or connection "
                                            f"dropped: {reason}")) from None

    def send(self, method, url, headers=None, body=None) -> _Response:
        """One request; on a 401 with a Bearer challenge, get a token for the challenged scope
        from the realm and try once more (tokens are scoped, so a push may need a new one)."""
        for attempt in (1, 2):
            authorization = (f"Bearer {self.token}" if self.token
                             else basic(*self.auth) if self.auth else None)
            resp = self._once(method, url, headers, body, authorization)
            if resp.status != 401 or attempt == 2:
                return resp
            scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if scheme != "bearer" or not params.get("realm"):
                return resp
            resp.close()
            self.token = self._fetch_token(params)
        return resp

    def _fetch_token(self, params: dict[str, str]) -> str:
        realm = params["realm"]
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in params.get("scope", "").split() if s]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise OciError(realm, "token realm is not an http(s) URL")
        resp = self._once("GET", url, {"Accept": "application/json"}, None,
                          basic(*self.auth) if self.auth else None)
        body = resp.read()
        if resp.status != 200:
            raise OciError(url, self._scrub(f"token request failed: {_problem(resp.status, body)}"))
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise OciError(url, "token response has no 'token' or 'access_token'")
        return token

    def call(self, method, url, expect, headers=None, body=None) -> tuple[int, object, bytes]:
        """``send`` + read the (small) body; any status outside ``expect`` is an OciError
        naming the URL and the registry's own error code and message."""
        resp = self.send(method, url, headers, body)
        data = resp.read()
        if resp.status not in expect:
            problem = _problem(resp.status, data)
            if resp.status == 401 and not self.auth:
                problem += " (no credentials given: set WASMFORGE_REGISTRY_USER/PASSWORD)"
            raise OciError(url, self._scrub(f"{method} {problem}"))
        return resp.status, resp.headers, data


# --------------------------------------------------------------------------- push / pull

def _push_blob(client: _Client, descriptor: dict, path: str) -> bool:
    """Upload one blob unless the registry has it; True when it was uploaded."""
    digest = descriptor["digest"]
    head = client.url(f"blobs/{digest}")
    status, _, _ = client.call("HEAD", head, expect=(200, 404))
    if status == 200:
        return False
    start = client.url("blobs/uploads/")
    _, headers, _ = client.call("POST", start, expect=(202,), body=b"")
    location = headers.get("Location")
    if not location:
        raise OciError(start, "upload started but the registry sent no Location header")
    put = upload_url(start, location, digest)
    _, headers, _ = client.call("PUT", put, expect=(201,), body=path,
                                headers={"Content-Type": "application/octet-stream"})
    _check_server_digest(headers, digest, put)
    return True


def push(layout_dir: str, registry: str, repository: str, tag: str, auth: tuple | None,
         insecure_http: bool = True) -> str:
    """Push the layout's manifest and blobs to ``registry/repository:tag``; return the manifest
    digest. Blobs the registry already has are skipped, so pushing again is cheap; the manifest
    goes last, so a failure never leaves ``tag`` pointing at missing blobs."""
    client = _Client(registry, repository, auth, insecure_http)
    check_tag(tag, client.base)
    manifest, parsed = read_layout(layout_dir, tag)
    for d in blobs(parsed):
        _push_blob(client, d, blob_path(layout_dir, d["digest"]))
    digest = sha256_digest(manifest)
    url = client.url(f"manifests/{tag}")
    _, headers, _ = client.call("PUT", url, expect=(201,), body=manifest,
                                headers={"Content-Type": MANIFEST_MEDIA_TYPE})
    _check_server_digest(headers, digest, url)
    return digest


def tag_exists(registry: str, repository: str, tag: str, auth=None,
               insecure_http: bool = True) -> str | None:
    """The digest ``tag`` points at, or None when the registry has no such tag (or repository).
    Used to refuse overwriting a published version with different content."""
    client = _Client(registry, repository, auth, insecure_http)
    check_tag(tag, client.base)
    url = client.url(f"manifests/{tag}")
    status, headers, _ = client.call("HEAD", url, expect=(200, 404), headers={"Accept": ANY_MANIFEST})
    if status == 404:
        return None
    digest = headers.get("Docker-Content-Digest")
    if digest and DIGEST.fullmatch(digest):
        return digest
    _, _, body = client.call("GET", url, expect=(200,), headers={"Accept": ANY_MANIFEST})
    return sha256_digest(body)


def _pull_blob(client: _Client, descriptor: dict, out_dir: str) -> None:
    url = client.url(f"blobs/{descriptor['digest']}")
    resp = client.send("GET", url)
    if resp.status != 200:
        raise OciError(url, client._scrub(f"GET {_problem(resp.status, resp.read())}"))
    try:
        write_blob(out_dir, files.read_chunks(resp.fp), (descriptor["digest"], descriptor["size"]))
    except files.ContentMismatch as e:
        raise OciError(url, f"blob rejected: {e}") from None
    except (OSError, http.client.HTTPException) as e:
        raise OciError(url, f"download failed: {e}") from None
    finally:
        resp.close()


def pull(registry: str, repository: str, tag: str, out_dir: str, auth=None,
         insecure_http: bool = True) -> dict:
    """Fetch ``repository:tag`` (or ``@sha256:...``) into the OCI layout ``out_dir``, verifying
    the manifest digest and every blob's size and sha256 before keeping it. Returns the same
    summary as ``write_layout``; the module is at ``blob_path(out_dir, result["layer_digest"])``."""
    client = _Client(registry, repository, auth, insecure_http)
    by_digest = isinstance(tag, str) and bool(DIGEST.fullmatch(tag))
    if not by_digest:
        check_tag(tag, client.base)
    url = client.url(f"manifests/{tag}")
    _, headers, body = client.call("GET", url, expect=(200,), headers={"Accept": MANIFEST_MEDIA_TYPE})
    digest = sha256_digest(body)
    if by_digest and digest != tag:
        raise OciError(url, f"manifest hashes to {digest}, not the requested digest")
    _check_server_digest(headers, digest, url)
    manifest = parse_manifest(body, url, headers.get("Content-Type", ""))
    for d in blobs(manifest):
        _pull_blob(client, d, out_dir)
    return finish_layout(out_dir, body, manifest, None if by_digest else tag)
