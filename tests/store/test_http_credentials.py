"""Credentials are sent to the configured server only, never along a redirect: against a
real nginx on loopback that redirects every request to a second address (127.0.0.2)."""
from __future__ import annotations

import os

import pytest

from wasmforge.http_client import basic
from wasmforge.release import oci
from wasmforge.store import local
from wasmforge.store.remote import Remote

USER, PASSWORD, TOKEN = "team", "s3cr3t-Pa55word", "t0ken-abc"


@pytest.mark.parametrize("creds", ["basic", "basic in the URL", "token"])
def test_the_remote_cache_sends_no_credentials_along_a_redirect(nginx, tmp_path, monkeypatch, creds):
    url = nginx.redirect_url
    for k in ("WASMFORGE_REMOTE_CACHE_TOKEN", "WASMFORGE_REMOTE_CACHE_USER", "WASMFORGE_REMOTE_CACHE_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    if creds == "basic":
        monkeypatch.setenv("WASMFORGE_REMOTE_CACHE_USER", USER)
        monkeypatch.setenv("WASMFORGE_REMOTE_CACHE_PASSWORD", PASSWORD)
    elif creds == "token":
        monkeypatch.setenv("WASMFORGE_REMOTE_CACHE_TOKEN", TOKEN)
    else:
        url = url.replace("http://", f"http://{USER}:{PASSWORD}@")
    monkeypatch.setenv("WASMFORGE_REMOTE_CACHE", url)
    expected = f"Bearer {TOKEN}" if creds == "token" else basic(USER, PASSWORD)

    store = local.Store(str(tmp_path / "store"))
    blob = tmp_path / "blob"
    blob.write_bytes(b"kernels")
    sha = store.put_file(str(blob))
    # each call meets the redirect on a fresh Remote (a failure marks a Remote broken)
    assert Remote.from_env().get_action("0" * 64) is None                 # GET, redirected
    assert Remote.from_env().fetch_blob(store, "1" * 64) is False         # GET, redirected
    Remote.from_env().put(store, "2" * 64, {"outputs": {"x": {"sha256": sha}}, "result": {}})   # PUT

    first = nginx.received_authorization("redirect", 3)
    assert [m for m, _, _ in first] == ["GET", "GET", "PUT"]
    assert all(auth == expected for _, _, auth in first)   # the configured server got them
    other = nginx.received_authorization("other_host", 2)
    assert [m for m, _, _ in other] == ["GET", "GET"]      # urllib follows a redirected GET ...
    assert [auth for _, _, auth in other] == ["", ""]      # ... without the credentials


def test_the_registry_client_sends_no_credentials_along_a_redirect(nginx):
    registry = f"http://127.0.0.1:{nginx.redirect_port}"
    client = oci._Client(registry, "team/model", (USER, PASSWORD), insecure_http=True)
    resp = client.send("GET", client.url("manifests/1.0"))
    assert resp.status == 404
    resp.close()
    assert [auth for _, _, auth in nginx.received_authorization("redirect", 1)] == [basic(USER, PASSWORD)]
    other = nginx.received_authorization("other_host", 1)
    assert [(m, auth) for m, _, auth in other] == [("GET", "")]
    assert os.path.basename(other[0][1]) == "1.0"
