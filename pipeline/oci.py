"""Publish a WebAssembly module as an OCI artifact, with the Python standard library only.

Why OCI: every team already runs a registry (ghcr.io, Harbor, ECR, a plain ``registry:2``)
that stores versioned, content-addressed, access-controlled artifacts, and Wasm runtimes
(wasmtime, Spin, wasmCloud, containerd shims) pull modules from one.

What is written follows the CNCF TAG Runtime "Wasm OCI Artifact layout":

    manifest  application/vnd.oci.image.manifest.v1+json, schemaVersion 2, caller's annotations
      config  application/vnd.wasm.config.v0+json
              {"architecture":"wasm","layerDigests":["sha256:..."],"os":"wasip1"}
      layers  one application/wasm layer: the module's bytes, unchanged

The artifact type is carried by ``config.mediaType`` (the OCI image-spec 1.1 artifact guidance),
so the manifest has no ``artifactType`` field: registries that predate image-spec 1.1
(distribution 2.x, many hosted ones) accept it unchanged. The config has no ``created`` field
and all JSON is canonical (sorted keys, no spaces): the same module and annotations always give
the same digests, so publishing again is a no-op and "is this tag already this content?" is a
digest comparison (see ``tag_exists``).

Safety rules the code keeps:
* blobs before the manifest, on disk and in a registry, so a crash or failed push never leaves
  a reference (index.json, a tag) to something missing;
* every digest is checked: local blobs before pushing, everything pulled before it is kept,
  and the registry's ``Docker-Content-Digest`` against our own;
* a digest from a registry is only used as a file name once it matches ``sha256:<64 hex>``;
* credentials go in headers only, are not sent along redirects (blob downloads are often
  redirected to a storage bucket) and never appear in messages: URLs in errors are shown
  without userinfo or query string, and the password is scrubbed from any server text we quote.

Credentials come from the caller or from WASMFORGE_REGISTRY_USER / WASMFORGE_REGISTRY_PASSWORD
(``auth_from_env``). Both HTTP basic auth (htpasswd registries) and the token flow
(``401 WWW-Authenticate: Bearer realm=...`` as used by Docker Hub, ghcr.io, Harbor) work.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse

from pipeline.http_client import basic, open_url, redact, url_credentials

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_MEDIA_TYPE = "application/wasm"
REF_NAME = "org.opencontainers.image.ref.name"
# everything a tag may point at, so tag_exists reports the digest the registry really stores
# (asked for only one type, distribution 2.x may convert a Docker manifest and change its digest)
ANY_MANIFEST = (f"{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}, "
                "application/vnd.docker.distribution.manifest.v2+json, "
                "application/vnd.docker.distribution.manifest.list.v2+json")

TIMEOUT = float(os.environ.get("WASMFORGE_REGISTRY_TIMEOUT", "60"))
MAX_MANIFEST = 4 * 1024 * 1024      # the distribution spec's limit registries must accept
CHUNK = 1 << 20

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_WASM_MODULE = b"\0asm\x01\x00\x00\x00"     # magic + version 1 (a component has 0d 00 01 00)


class OciError(RuntimeError):
    """Publishing or fetching failed; ``str()`` is ``<url or file>: <problem>``.

    ``where`` is already redacted (no userinfo, no query string), so the message is safe to log.
    """

    def __init__(self, where: str, problem: str):
        self.where, self.problem = redact(where), problem
        super().__init__(f"{self.where}: {problem}")


# --------------------------------------------------------------------------- small pure helpers

def canonical_json(obj) -> bytes:
    """Sorted keys, no whitespace, UTF-8: identical objects always give identical bytes (and
    digests), whatever the dict insertion order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout_dir: str, digest: str) -> str:
    """Where a blob lives in an OCI layout; refuses anything but ``sha256:<64 hex>`` so a digest
    that came from a registry can never name a file outside ``blobs/sha256``."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise OciError(str(layout_dir), f"not a sha256 digest: {digest!r}")
    return os.path.join(layout_dir, "blobs", "sha256", digest.split(":", 1)[1])


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


def _check_tag(tag: str, where: str) -> None:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise OciError(where, f"invalid tag {tag!r} (allowed: [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")


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


# --------------------------------------------------------------------------- files

def _atomic_write(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (temp file + os.replace)."""
    _atomic_stream(path, [data])


def _atomic_stream(path, chunks, expect: tuple[str, int] | None = None,
                   folder: str | None = None) -> tuple[str, int]:
    """Write ``chunks`` to ``path`` atomically, hashing on the way; with ``expect`` =
    (digest, size) the file is only kept if both match. ``path`` may be a function of the
    digest (a blob is named by its content, known only at the end; then give ``folder``).
    Returns (digest, size)."""
    folder = folder or os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        h, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if expect and size > expect[1]:
                    raise OciError(folder, f"more than the expected {expect[1]} bytes")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        digest = "sha256:" + h.hexdigest()
        if expect and (digest, size) != expect:
            raise OciError(folder, f"content does not match its descriptor: got {digest} "
                                 f"({size} bytes), expected {expect[0]} ({expect[1]} bytes)")
        os.chmod(tmp, 0o644)   # mkstemp makes 0600; layouts are meant to be shared
        os.replace(tmp, path(digest) if callable(path) else path)
        return digest, size
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_chunks(f):
    while chunk := f.read(CHUNK):
        yield chunk


def _file_digest(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in _read_chunks(f):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _descriptor(media_type: str, digest: str, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _index_bytes(manifest_digest: str, manifest_size: int, tag: str | None) -> bytes:
    """index.json with exactly this manifest: rebuilt from the manifest alone, so a pulled
    layout is byte-identical to the one that was pushed."""
    extra = {"annotations": {REF_NAME: tag}} if tag else {}
    return canonical_json({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [_descriptor(MANIFEST_MEDIA_TYPE, manifest_digest, manifest_size, **extra)]})


def _finish_layout(out_dir: str, manifest: bytes, tag: str | None) -> str:
    """Manifest blob, then index.json, then oci-layout: the reference is written last."""
    digest = sha256_digest(manifest)
    _atomic_write(blob_path(out_dir, digest), manifest)
    _atomic_write(os.path.join(out_dir, "index.json"), _index_bytes(digest, len(manifest), tag))
    _atomic_write(os.path.join(out_dir, "oci-layout"), canonical_json({"imageLayoutVersion": "1.0.0"}))
    return digest


def _summary(manifest: bytes, parsed: dict, tag: str | None) -> dict:
    config, layer = parsed["config"], parsed["layers"][0]
    return {"tag": tag, "manifest_digest": sha256_digest(manifest), "manifest_size": len(manifest),
            "config_digest": config["digest"], "config_size": config["size"],
            "layer_digest": layer["digest"], "layer_size": layer["size"]}


def _check_wasm_module(wasm_path: str, head: bytes) -> None:
    """Only core modules: the config's ``os`` is then wasip1. A component (os wasip2) would need
    the spec's ``component`` field (its world, imports, exports), which needs a WIT parser."""
    if head[:4] != b"\0asm":
        raise OciError(wasm_path, "not a WebAssembly binary (no \\0asm magic)")
    if head != _WASM_MODULE:
        raise OciError(wasm_path, f"not a core WebAssembly module, version bytes {head[4:].hex()} "
                                  "(components, os wasip2, need a 'component' config: unsupported)")


def write_layout(wasm_path: str, out_dir: str, annotations: dict[str, str], tag: str) -> dict:
    """Write ``wasm_path`` as a Wasm OCI artifact into the OCI image layout ``out_dir``.

    index.json is rewritten to reference only this manifest, under ``tag``; blobs from earlier
    writes are left alone (they are content-addressed, and harmless). Identical inputs give a
    byte-identical tree. Returns the digests and sizes of manifest, config and layer.
    """
    _check_tag(tag, out_dir)
    if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise OciError(out_dir, "annotations must be a dict of str to str")
    try:
        with open(wasm_path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise OciError(wasm_path, f"cannot read the module: {e.strerror or e}") from e
    _check_wasm_module(wasm_path, head)
    try:
        with open(wasm_path, "rb") as f:   # hash while copying: one read of a large module
            layer_digest, layer_size = _atomic_stream(
                lambda d: blob_path(out_dir, d), _read_chunks(f),
                folder=os.path.join(out_dir, "blobs", "sha256"))
    except OSError as e:
        raise OciError(out_dir, f"cannot copy {wasm_path} into the layout: {e.strerror or e}") from e

    config = canonical_json({"architecture": "wasm", "os": "wasip1", "layerDigests": [layer_digest]})
    config_digest = sha256_digest(config)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config_digest, len(config)),
        "layers": [_descriptor(WASM_MEDIA_TYPE, layer_digest, layer_size)]}
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest_bytes = canonical_json(manifest)
    try:
        _atomic_write(blob_path(out_dir, config_digest), config)
        _finish_layout(out_dir, manifest_bytes, tag)
    except OSError as e:
        raise OciError(out_dir, f"cannot write the layout: {e.strerror or e}") from e
    return _summary(manifest_bytes, manifest, tag)


def _parse_manifest(body: bytes, where: str, content_type: str = "") -> dict:
    """The image manifest's JSON, checked enough that every later step can trust its shape:
    OCI image manifest, schemaVersion 2, sha256 descriptors, exactly one layer."""
    try:
        m = json.loads(body)
    except ValueError as e:
        raise OciError(where, f"manifest is not JSON: {e}") from e
    if not isinstance(m, dict):
        raise OciError(where, "manifest is not a JSON object")
    media_type = m.get("mediaType") or content_type.split(";")[0].strip()
    if media_type != MANIFEST_MEDIA_TYPE or m.get("schemaVersion") != 2:
        raise OciError(where, f"not an OCI image manifest (mediaType {media_type!r}, "
                              f"schemaVersion {m.get('schemaVersion')!r})")
    descriptors = [m.get("config")] + list(m.get("layers") or [])
    for d in descriptors:
        if not (isinstance(d, dict) and isinstance(d.get("digest"), str) and _DIGEST.fullmatch(d["digest"])
                and isinstance(d.get("size"), int) and d["size"] >= 0):
            raise OciError(where, f"bad descriptor in manifest: {d!r}")
    if len(descriptors) != 2:
        raise OciError(where, f"expected exactly one layer (the wasm module), found {len(descriptors) - 1}")
    return m


def _read_layout(layout_dir: str, tag: str) -> tuple[bytes, dict]:
    """The manifest to push from ``layout_dir``, with every blob it names verified on disk
    (size and sha256), so a corrupt layout is refused before anything is sent."""
    index_path = os.path.join(layout_dir, "index.json")
    try:
        with open(index_path, "rb") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        raise OciError(index_path, f"cannot read the OCI layout index: {e}") from e
    manifests = [d for d in index.get("manifests", []) if isinstance(d, dict)]
    if len(manifests) != 1:
        manifests = [d for d in manifests if (d.get("annotations") or {}).get(REF_NAME) == tag]
    if len(manifests) != 1:
        raise OciError(index_path, f"expected one manifest (or one named {tag!r}), "
                                   f"found {len(manifests)}")
    path = blob_path(layout_dir, manifests[0].get("digest"))
    try:
        with open(path, "rb") as f:
            body = f.read(MAX_MANIFEST + 1)
    except OSError as e:
        raise OciError(path, f"manifest blob missing: {e.strerror or e}") from e
    if sha256_digest(body) != manifests[0]["digest"]:
        raise OciError(path, "manifest blob does not match its digest")
    manifest = _parse_manifest(body, path)
    for d in [manifest["config"], *manifest["layers"]]:
        p = blob_path(layout_dir, d["digest"])
        try:
            got = _file_digest(p)
        except OSError as e:
            raise OciError(p, f"blob missing: {e.strerror or e}") from e
        if got != (d["digest"], d["size"]):
            raise OciError(p, f"blob does not match its descriptor: {got[0]} ({got[1]} bytes), "
                              f"expected {d['digest']} ({d['size']} bytes)")
    return body, manifest


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
    _check_tag(tag, client.base)
    manifest, parsed = _read_layout(layout_dir, tag)
    for d in [parsed["config"], *parsed["layers"]]:
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
    _check_tag(tag, client.base)
    url = client.url(f"manifests/{tag}")
    status, headers, _ = client.call("HEAD", url, expect=(200, 404), headers={"Accept": ANY_MANIFEST})
    if status == 404:
        return None
    digest = headers.get("Docker-Content-Digest")
    if digest and _DIGEST.fullmatch(digest):
        return digest
    _, _, body = client.call("GET", url, expect=(200,), headers={"Accept": ANY_MANIFEST})
    return sha256_digest(body)


def _pull_blob(client: _Client, descriptor: dict, out_dir: str) -> None:
    url = client.url(f"blobs/{descriptor['digest']}")
    resp = client.send("GET", url)
    if resp.status != 200:
        raise OciError(url, client._scrub(f"GET {_problem(resp.status, resp.read())}"))
    expect = (descriptor["digest"], descriptor["size"])
    try:
        _atomic_stream(blob_path(out_dir, descriptor["digest"]), _read_chunks(resp.fp), expect)
    except OciError as e:
        raise OciError(url, f"blob rejected: {e.problem}") from None
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
    by_digest = isinstance(tag, str) and bool(_DIGEST.fullmatch(tag))
    if not by_digest:
        _check_tag(tag, client.base)
    url = client.url(f"manifests/{tag}")
    _, headers, body = client.call("GET", url, expect=(200,), headers={"Accept": MANIFEST_MEDIA_TYPE})
    digest = sha256_digest(body)
    if by_digest and digest != tag:
        raise OciError(url, f"manifest hashes to {digest}, not the requested digest")
    _check_server_digest(headers, digest, url)
    manifest = _parse_manifest(body, url, headers.get("Content-Type", ""))
    for d in [manifest["config"], *manifest["layers"]]:
        _pull_blob(client, d, out_dir)
    ref = None if by_digest else tag
    try:
        _finish_layout(out_dir, body, ref)
    except OSError as e:
        raise OciError(out_dir, f"cannot write the layout: {e.strerror or e}") from e
    return _summary(body, manifest, ref)
