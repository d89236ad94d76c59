"""A WebAssembly module as an OCI artifact in an OCI image layout on disk.

What is written follows the CNCF TAG Runtime "Wasm OCI Artifact layout":

    manifest  application/vnd.oci.image.manifest.v1+json, schemaVersion 2, caller's annotations
      config  application/vnd.wasm.config.v0+json
              {"architecture":"wasm","layerDigests":["sha256:..."],"os":"wasip1"}
      layers  one application/wasm layer: the module's bytes, unchanged

The artifact type is carried by ``config.mediaType`` (the OCI image-spec 1.1 artifact guidance),
so the manifest has no ``artifactType`` field: registries that predate image-spec 1.1
(distribution 2.x, many hosted ones) accept it unchanged. The config has no ``created`` field
and all JSON is canonical (``digests.canonical``: sorted keys, no spaces): the same module and
annotations always give the same digests, so publishing again is a no-op and "is this tag
already this content?" is a digest comparison (see ``registry.tag_exists``).

Blobs are written before the manifest and index.json last, so a crash never leaves a reference
to something missing; a layout is read back (``read_layout``) only after every blob it names is
checked against its size and sha256. A digest is only used as a file name once it matches
``sha256:<64 hex>`` (``blob_path``).
"""
from __future__ import annotations

import json
import os
import re

from wasmforge.http_client import redact
from wasmforge.store import digests, files
from wasmforge.store.digests import canonical

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_MEDIA_TYPE = "application/wasm"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_MANIFEST = 4 * 1024 * 1024      # the distribution spec's limit registries must accept

DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_WASM_MODULE = b"\0asm\x01\x00\x00\x00"     # magic + version 1 (a component has 0d 00 01 00)


class OciError(RuntimeError):
    """Publishing or fetching failed; ``str()`` is ``<url or file>: <problem>``.

    ``where`` is already redacted (no userinfo, no query string), so the message is safe to log.
    """

    def __init__(self, where: str, problem: str):
        self.where, self.problem = redact(where), problem
        super().__init__(f"{self.where}: {problem}")


def sha256_digest(data: bytes) -> str:
    """An OCI digest (``sha256:<hex>``) of bytes."""
    return "sha256:" + digests.digest_bytes(data)


def blob_path(layout_dir: str, digest: str) -> str:
    """Where a blob lives in an OCI layout; refuses anything but ``sha256:<64 hex>`` so a digest
    that came from a registry can never name a file outside ``blobs/sha256``."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise OciError(str(layout_dir), f"not a sha256 digest: {digest!r}")
    return os.path.join(layout_dir, "blobs", "sha256", digest.split(":", 1)[1])


def write_blob(layout_dir: str, chunks, expect: tuple[str, int] | None = None) -> tuple[str, int]:
    """Stream ``chunks`` into the layout as a blob named by its digest (checked against
    ``expect`` = (digest, size) when given: else ``files.ContentMismatch``); return
    (digest, size)."""
    want = (expect[0].split(":", 1)[1], expect[1]) if expect else None
    if expect:
        blob_path(layout_dir, expect[0])   # refuse a malformed digest before writing anything
    sha, size = files.atomic_stream(lambda sha: blob_path(layout_dir, "sha256:" + sha), chunks, want,
                                    folder=os.path.join(layout_dir, "blobs", "sha256"))
    return "sha256:" + sha, size


def check_tag(tag: str, where: str) -> None:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise OciError(where, f"invalid tag {tag!r} (allowed: [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")


def _descriptor(media_type: str, digest: str, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _index_bytes(manifest_digest: str, manifest_size: int, tag: str | None) -> bytes:
    """index.json with exactly this manifest: rebuilt from the manifest alone, so a pulled
    layout is byte-identical to the one that was pushed."""
    extra = {"annotations": {REF_NAME: tag}} if tag else {}
    return canonical({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [_descriptor(MANIFEST_MEDIA_TYPE, manifest_digest, manifest_size, **extra)]})


def finish_layout(out_dir: str, manifest: bytes, parsed: dict, tag: str | None) -> dict:
    """Manifest blob, then index.json, then oci-layout: the reference is written last.
    Returns the layout's summary (``summary``)."""
    digest = sha256_digest(manifest)
    try:
        files.write_bytes(blob_path(out_dir, digest), manifest)
        files.write_bytes(os.path.join(out_dir, "index.json"), _index_bytes(digest, len(manifest), tag))
        files.write_bytes(os.path.join(out_dir, "oci-layout"), canonical({"imageLayoutVersion": "1.0.0"}))
    except OSError as e:
        raise OciError(out_dir, f"cannot write the layout: {e.strerror or e}") from e
    return summary(manifest, parsed, tag)


def summary(manifest: bytes, parsed: dict, tag: str | None) -> dict:
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
    check_tag(tag, out_dir)
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
            layer_digest, layer_size = write_blob(out_dir, files.read_chunks(f))
    except OSError as e:
        raise OciError(out_dir, f"cannot copy {wasm_path} into the layout: {e.strerror or e}") from e

    config = canonical({"architecture": "wasm", "os": "wasip1", "layerDigests": [layer_digest]})
    config_digest = sha256_digest(config)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config_digest, len(config)),
        "layers": [_descriptor(WASM_MEDIA_TYPE, layer_digest, layer_size)]}
    if annotations:
        manifest["annotations"] = dict(annotations)
    try:
        files.write_bytes(blob_path(out_dir, config_digest), config)
    except OSError as e:
        raise OciError(out_dir, f"cannot write the layout: {e.strerror or e}") from e
    return finish_layout(out_dir, canonical(manifest), manifest, tag)


def parse_manifest(body: bytes, where: str, content_type: str = "") -> dict:
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
        if not (isinstance(d, dict) and isinstance(d.get("digest"), str) and DIGEST.fullmatch(d["digest"])
                and isinstance(d.get("size"), int) and d["size"] >= 0):
            raise OciError(where, f"bad descriptor in manifest: {d!r}")
    if len(descriptors) != 2:
        raise OciError(where, f"expected exactly one layer (the wasm module), found {len(descriptors) - 1}")
    return m


def blobs(manifest: dict) -> list[dict]:
    """The descriptors of a parsed manifest's blobs: config, then layers."""
    return [manifest["config"], *manifest["layers"]]


def read_layout(layout_dir: str, tag: str) -> tuple[bytes, dict]:
    """The manifest to push from ``layout_dir``, with every blob it names verified on disk
    (size and sha256), so a corrupt layout is refused before anything is sent."""
    index_path = os.path.join(layout_dir, "index.json")
    try:
        index = files.read_json(index_path)
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
    manifest = parse_manifest(body, path)
    for d in blobs(manifest):
        p = blob_path(layout_dir, d["digest"])
        try:
            got = ("sha256:" + digests.hash_file(p), os.path.getsize(p))
        except OSError as e:
            raise OciError(p, f"blob missing: {e.strerror or e}") from e
        if got != (d["digest"], d["size"]):
            raise OciError(p, f"blob does not match its descriptor: {got[0]} ({got[1]} bytes), "
                              f"expected {d['digest']} ({d['size']} bytes)")
    return body, manifest
