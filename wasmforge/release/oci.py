"""Publish a WebAssembly module as an OCI artifact, with the Python standard library only:
the public face of two modules with one job each.

* ``oci_layout``: the artifact in an OCI image layout on disk (CNCF "Wasm OCI Artifact
  layout": canonical manifest, config and one ``application/wasm`` layer) — ``write_layout``,
  ``blob_path``; reading a layout back verifies every blob.
* ``registry``: the OCI distribution-API client — ``push``, ``pull``, ``tag_exists``, with basic
  and bearer-token auth (``auth_from_env``), credentials never sent along a redirect nor shown.

Errors of both are ``OciError`` (``<url or file>: <problem>``, already redacted).
"""
from __future__ import annotations

from wasmforge.http_client import redact
from wasmforge.release.oci_layout import (
                                          CONFIG_MEDIA_TYPE,
                                          INDEX_MEDIA_TYPE,
                                          MANIFEST_MEDIA_TYPE,
                                          WASM_MEDIA_TYPE,
                                          OciError,
                                          blob_path,
                                          sha256_digest,
                                          write_layout,
)
from wasmforge.release.registry import (
                                          _Client,
                                          auth_from_env,
                                          parse_challenge,
                                          pull,
                                          push,
                                          tag_exists,
                                          upload_url,
)
from wasmforge.store.digests import canonical as canonical_json

__all__ = ["CONFIG_MEDIA_TYPE", "INDEX_MEDIA_TYPE", "MANIFEST_MEDIA_TYPE", "WASM_MEDIA_TYPE",
           "OciError", "_Client", "auth_from_env", "blob_path", "canonical_json", "parse_challenge",
           "pull", "push", "redact", "sha256_digest", "tag_exists", "upload_url", "write_layout"]
