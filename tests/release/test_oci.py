"""wasmforge.release.oci against a real registry on loopback: Debian's ``docker-registry``
(CNCF distribution 2.8), started per module on a free port with its own config and storage.

Registries that need credentials are real too: htpasswd (bcrypt) basic auth, and token auth,
for which this file runs a small token server (it signs RS256 JWTs with ``openssl``) that the
registry verifies against the certificate in its config. The only thing in between, when a
test needs it, is a forwarding proxy that records requests and can drop one, to fail a push
half way the way a crashing registry or a network cut does.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest
import wasmtime

from wasmforge.release import oci

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER, PASSWORD = "publisher", "Sup3r-s3cret-Pa55"


def tiny_wasm(payload: bytes = b"hello") -> bytes:
    """The smallest valid core module: header + one custom section named "wasmforge"."""
    name = b"wasmforge"
    content = bytes([len(name)]) + name + payload
    assert len(content) < 128   # one-byte LEB128 size
    return b"\0asm\x01\x00\x00\x00" + b"\x00" + bytes([len(content)]) + content


def tree(folder) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str = "/v2/") -> int | None:
    """GET on loopback with http.client (no proxy settings involved); None if nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


class Registry:
    """One docker-registry process: own JSON (= YAML) config, storage under ``base``, a free
    loopback port; ``auth`` is the config's ``auth:`` section, if any."""

    def __init__(self, base, auth: dict | None = None):
        if not os.path.exists(REGISTRY_BIN):
            pytest.fail(f"{REGISTRY_BIN} not found: install Debian's docker-registry package "
                        "(apt-get install docker-registry; scripts/setup)")
        self.base = str(base)
        self.storage = os.path.join(self.base, "storage")
        os.makedirs(self.storage, exist_ok=True)
        self.log_path = os.path.join(self.base, "registry.log")
        # REGISTRY_* variables would override the config file: start from a clean environment
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        for _ in range(3):   # a free port can be taken between probe and bind: try another
            self.port = free_port()
            config = {
                "version": "0.1",
                "log": {"level": "info", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": self.storage},
                            "maintenance": {"uploadpurging": {"enabled": False}}},
                "http": {"addr": f"127.0.0.1:{self.port}", "secret": uuid.uuid4().hex},
            }
            if auth:
                config["auth"] = auth
            self.config = os.path.join(self.base, "config.yml")
            with open(self.config, "w") as f:
                json.dump(config, f, indent=1)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config], env=env,
                                             stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return
        pytest.fail(f"docker-registry did not start; its log ({self.log_path}):\n{self.log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if http_status(self.port) in (200, 401):   # 401: up, and wants credentials
                return True
            time.sleep(0.05)
        self.stop()
        return False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def blob_data(self, digest: str) -> str:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256",
                            hexd[:2], hexd, "data")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FaultyProxy:
    """Forwards every request to a registry and records ``(method, path)``; a request for which
    ``fail(method, path)`` is true is read and then answered by closing the connection, like a
    registry killed mid-upload. ``Host`` is passed through, so upload Locations point back here."""

    def __init__(self, target_port: int):
        self.requests: list[tuple[str, str]] = []
        self.fail = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((self.command, self.path))
                if proxy.fail and proxy.fail(self.command, self.path):
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=10)
                try:
                    upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                    resp = upstream.getresponse()
                    data = resp.read()
                finally:
                    upstream.close()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
                self.send_header("Content-Length", str(length or 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def uploads(self) -> list[str]:
        return [p for m, p in self.requests if m == "POST" and "/blobs/uploads/" in p]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def faulty_proxy(registry: Registry):
    proxy = FaultyProxy(registry.port)
    try:
        yield proxy
    finally:
        proxy.stop()


def bcrypt_htpasswd_line(user: str, password: str) -> str:
    """``user:$2…`` — distribution only accepts bcrypt. Python's bcrypt if installed, else
    ``htpasswd -B`` (apache2-utils, password on stdin so it never shows in ``ps``)."""
    try:
        import bcrypt
        return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
    except ImportError:
        pass
    htpasswd = shutil.which("htpasswd")
    if not htpasswd:
        pytest.skip("no bcrypt hasher: needs Python's bcrypt or htpasswd (apt-get install apache2-utils)")
    res = subprocess.run([htpasswd, "-niB", "-C", "4", user], input=password, text=True,
                         capture_output=True, check=True)
    return res.stdout.strip()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The token endpoint of the registry's ``auth: token`` setup (Docker's token auth spec):
    checks basic credentials, then grants what the ``scope`` asks for in an RS256 JWT whose
    ``x5c`` certificate the registry trusts (``rootcertbundle``)."""

    SERVICE, ISSUER = "wasmforge-test-registry", "wasmforge-test-token-issuer"

    def __init__(self, base, user: str, password: str):
        openssl = shutil.which("openssl")
        if not openssl:
            pytest.skip("token auth test needs the openssl command (Debian package openssl)")
        self.key, self.cert = os.path.join(base, "token.key"), os.path.join(base, "token.crt")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=wasmforge test token issuer", "-keyout", self.key,
                        "-out", self.cert], check=True, capture_output=True)
        with open(self.cert) as f:
            self.x5c = base64.b64encode(ssl.PEM_cert_to_DER_cert(f.read())).decode()
        self.openssl = openssl
        self.scopes: list[str] = []
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if self.headers.get("Authorization") != expected:
                    return self.answer(401, {"details": "bad or missing credentials"})
                server.scopes += query.get("scope", [])
                token = server.mint(user, query.get("scope", []))
                self.answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def answer(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def mint(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:   # repository:<name>:<action,action>
            head, actions = scope.rsplit(":", 1)
            kind, name = head.split(":", 1)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": self.ISSUER, "sub": user, "aud": self.SERVICE, "iat": now,
                  "nbf": now - 30, "exp": now + 300, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run([self.openssl, "dgst", "-sha256", "-sign", self.key],
                                   input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{b64url(signature)}"

    def auth_config(self) -> dict:
        return {"token": {"realm": self.realm, "service": self.SERVICE, "issuer": self.ISSUER,
                          "rootcertbundle": self.cert}}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch):
    """urllib honours http_proxy; the registries here are on loopback."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"])))
    for name in ("WASMFORGE_REGISTRY_USER", "WASMFORGE_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = Registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)   # pushed ResNet-50 releases


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("basic-registry")
    htpasswd = base / "htpasswd"
    htpasswd.write_text(bcrypt_htpasswd_line(USER, PASSWORD) + "\n")
    server = Registry(base, auth={"htpasswd": {"realm": "wasmforge-test", "path": str(htpasswd)}})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(base, USER, PASSWORD)
    server = Registry(base, auth=tokens.auth_config())
    server.tokens = tokens
    yield server
    server.stop()
    tokens.stop()


@pytest.fixture
def repo():
    """A fresh repository name per test: tests share a registry but never each other's tags."""
    return f"wasmforge/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def layout(tmp_path):
    wasm = tmp_path / "model.wasm"
    wasm.write_bytes(tiny_wasm())
    out = tmp_path / "layout"
    info = oci.write_layout(str(wasm), str(out), {"org.opencontainers.image.version": "1.0.0"}, "1.0.0")
    return str(out), info, wasm.read_bytes()


# --------------------------------------------------------------------------- the layout

def test_write_layout_is_deterministic_and_follows_the_wasm_artifact_layout(tmp_path):
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(tiny_wasm(b"some module"))
    notes = {"org.opencontainers.image.source": "https://example.org/x", "b": "2", "a": "1"}
    first = oci.write_layout(str(wasm), str(tmp_path / "one"), notes, "v1")
    second = oci.write_layout(str(wasm), str(tmp_path / "two"), dict(reversed(notes.items())), "v1")
    again = oci.write_layout(str(wasm), str(tmp_path / "one"), notes, "v1")   # over itself
    assert first == second == again
    assert tree(tmp_path / "one") == tree(tmp_path / "two")            # byte-identical trees
    files = tree(tmp_path / "one")
    assert not [p for p in files if os.path.basename(p).startswith(".tmp")]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}

    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["digest"] == first["manifest_digest"]

    def blob(digest):
        data = files[os.path.join("blobs", "sha256", digest.split(":")[1])]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    manifest = json.loads(blob(first["manifest_digest"]))
    assert manifest["schemaVersion"] == 2 and manifest["annotations"] == notes
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    assert blob(first["layer_digest"]) == wasm.read_bytes()
    config = blob(first["config_digest"])
    assert json.loads(config) == {"architecture": "wasm", "os": "wasip1",
                                  "layerDigests": [first["layer_digest"]]}
    assert config == oci.canonical_json(json.loads(config))          # canonical, no timestamps
    assert first["layer_size"] == len(wasm.read_bytes()) and first["config_size"] == len(config)


def test_write_layout_refuses_what_is_not_a_core_wasm_module(tmp_path):
    component = tmp_path / "c.wasm"
    component.write_bytes(b"\0asm\x0d\x00\x01\x00")
    text = tmp_path / "t.wasm"
    text.write_text("(module)")
    with pytest.raises(oci.OciError, match="component"):
        oci.write_layout(str(component), str(tmp_path / "a"), {}, "v1")
    with pytest.raises(oci.OciError, match=r"t\.wasm: not a WebAssembly binary"):
        oci.write_layout(str(text), str(tmp_path / "b"), {}, "v1")
    with pytest.raises(oci.OciError, match="missing.wasm: cannot read"):
        oci.write_layout(str(tmp_path / "missing.wasm"), str(tmp_path / "c"), {}, "v1")
    with pytest.raises(oci.OciError, match="invalid tag"):
        oci.write_layout(str(text), str(tmp_path / "d"), {}, "../v1")


def test_upload_location_relative_absolute_and_with_a_query():
    start = "http://127.0.0.1:5000/v2/a/b/blobs/uploads/"
    d = "sha256:" + "ab" * 32
    assert oci.upload_url(start, "/v2/a/b/blobs/uploads/u1", d) == \
        f"http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?digest=sha256%3A{'ab' * 32}"
    assert oci.upload_url(start, "https://storage.example/up/u1?_state=x%3D&y=1", d) == \
        f"https://storage.example/up/u1?_state=x%3D&y=1&digest=sha256%3A{'ab' * 32}"


def test_challenges_and_redaction():
    assert oci.parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                               'scope="repository:a/b:pull,push"') == (
        "bearer", {"realm": "https://auth.example/token", "service": "reg",
                   "scope": "repository:a/b:pull,push"})
    assert oci.parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert oci.redact("https://u:pw@reg.example:8443/v2/x?_state=abc") == "https://reg.example:8443/v2/x"


def test_auth_from_env(monkeypatch):
    assert oci.auth_from_env() is None
    monkeypatch.setenv("WASMFORGE_REGISTRY_USER", USER)
    with pytest.raises(oci.OciError, match="WASMFORGE_REGISTRY_PASSWORD is not set"):
        oci.auth_from_env()
    monkeypatch.setenv("WASMFORGE_REGISTRY_PASSWORD", PASSWORD)
    assert oci.auth_from_env() == (USER, PASSWORD)


# --------------------------------------------------------------------------- push / pull

def test_push_then_pull_gives_back_the_same_bytes_and_digests(registry, repo, layout, tmp_path):
    layout_dir, info, wasm = layout
    assert oci.push(layout_dir, registry.address, repo, "1.0.0", None) == info["manifest_digest"]

    pulled = tmp_path / "pulled"
    got = oci.pull(registry.address, repo, "1.0.0", str(pulled))
    assert got == info
    with open(oci.blob_path(str(pulled), got["layer_digest"]), "rb") as f:
        assert f.read() == wasm
    assert tree(pulled) == tree(layout_dir)           # the whole layout round-trips, bit for bit
    wasmtime.Module(wasmtime.Engine(), wasm)           # and it is still a loadable module

    by_digest = oci.pull(f"http://{registry.address}", repo, info["manifest_digest"], str(tmp_path / "d"))
    assert by_digest["layer_digest"] == info["layer_digest"]


def test_pushing_again_is_idempotent_and_uploads_nothing(registry, repo, layout):
    layout_dir, info, _ = layout
    assert oci.tag_exists(registry.address, repo, "1.0.0") is None
    first = oci.push(layout_dir, registry.address, repo, "1.0.0", None)
    with faulty_proxy(registry) as proxy:
        second = oci.push(layout_dir, proxy.address, repo, "1.0.0", None)
    assert first == second == info["manifest_digest"]
    assert proxy.uploads() == []                      # every blob was already there: HEAD only
    assert [m for m, p in proxy.requests if "/manifests/" in p] == ["PUT"]
    assert oci.tag_exists(registry.address, repo, "1.0.0") == info["manifest_digest"]
    assert oci.tag_exists(registry.address, repo, "2.0.0") is None


def test_a_push_that_fails_on_a_blob_never_puts_the_manifest(registry, repo, layout):
    layout_dir, info, _ = layout
    layer = info["layer_digest"]
    with faulty_proxy(registry) as proxy:
        proxy.fail = lambda method, path: method == "PUT" and "/blobs/uploads/" in path and \
            urllib.parse.quote(layer, safe="") in path
        with pytest.raises(oci.OciError) as err:
            oci.push(layout_dir, proxy.address, repo, "1.0.0", None)
        assert "/blobs/uploads/" in str(err.value) and "connection dropped" in str(err.value)
        assert not [p for m, p in proxy.requests if "/manifests/" in p]   # never tried
        assert oci.tag_exists(registry.address, repo, "1.0.0") is None    # asked the registry

        proxy.fail, proxy.requests = None, []          # the network is back: push again
        assert oci.push(layout_dir, proxy.address, repo, "1.0.0", None) == info["manifest_digest"]
        assert len(proxy.uploads()) == 1               # the config blob had made it already
    assert oci.tag_exists(registry.address, repo, "1.0.0") == info["manifest_digest"]


def test_a_push_to_nowhere_is_a_clear_error(registry, repo, layout):
    layout_dir, _, _ = layout
    closed = free_port()
    with pytest.raises(oci.OciError, match=rf"http://127\.0\.0\.1:{closed}/v2/{repo}/.*unreachable"):
        oci.push(layout_dir, f"127.0.0.1:{closed}", repo, "1.0.0", None)
    assert oci.tag_exists(registry.address, repo, "1.0.0") is None


def test_a_corrupt_layout_is_refused_before_anything_is_sent(registry, repo, layout):
    layout_dir, info, _ = layout
    with open(oci.blob_path(layout_dir, info["layer_digest"]), "r+b") as f:
        f.seek(9)
        f.write(b"X")
    with faulty_proxy(registry) as proxy, pytest.raises(oci.OciError, match="does not match its descriptor"):
        oci.push(layout_dir, proxy.address, repo, "1.0.0", None)
    assert proxy.requests == []


def test_pull_rejects_a_blob_the_registry_serves_corrupted(registry, repo, layout, tmp_path):
    layout_dir, info, _ = layout
    oci.push(layout_dir, registry.address, repo, "1.0.0", None)
    data = registry.blob_data(info["layer_digest"])
    with open(data, "r+b") as f:                       # bit rot in the registry's storage
        f.seek(9)
        f.write(b"X")
    out = tmp_path / "pulled"
    try:
        with pytest.raises(oci.OciError, match=r"/blobs/sha256:[0-9a-f]{64}: blob rejected: content does not match"):
            oci.pull(registry.address, repo, "1.0.0", str(out))
        assert not os.path.exists(oci.blob_path(str(out), info["layer_digest"]))
        assert not os.path.exists(out / "index.json")
        assert not [p for p in tree(out) if ".tmp" in p]
    finally:
        with open(data, "r+b") as f:                   # the registry is shared by the module
            f.seek(9)
            f.write(tiny_wasm()[9:10])


def test_pull_of_a_missing_tag_names_the_url(registry, repo, tmp_path):
    with pytest.raises(oci.OciError, match=rf"/v2/{repo}/manifests/nope: GET HTTP 404"):
        oci.pull(registry.address, repo, "nope", str(tmp_path / "x"))


# --------------------------------------------------------------------------- credentials

def test_basic_auth(basic_registry, repo, layout, tmp_path, monkeypatch):
    layout_dir, info, _ = layout
    with pytest.raises(oci.OciError) as err:
        oci.push(layout_dir, basic_registry.address, repo, "1.0.0", None)
    assert "401" in str(err.value) and "WASMFORGE_REGISTRY_USER" in str(err.value)
    with pytest.raises(oci.OciError) as err:
        oci.push(layout_dir, f"http://{USER}:{PASSWORD}x@{basic_registry.address}", repo, "1.0.0", None)
    assert "401" in str(err.value)
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)
    assert oci.tag_exists(basic_registry.address, repo, "1.0.0", auth=(USER, PASSWORD)) is None

    monkeypatch.setenv("WASMFORGE_REGISTRY_USER", USER)
    monkeypatch.setenv("WASMFORGE_REGISTRY_PASSWORD", PASSWORD)
    digest = oci.push(layout_dir, basic_registry.address, repo, "1.0.0", oci.auth_from_env())
    assert digest == info["manifest_digest"]
    assert oci.tag_exists(basic_registry.address, repo, "1.0.0", auth=(USER, PASSWORD)) == digest
    got = oci.pull(f"http://{USER}:{PASSWORD}@{basic_registry.address}", repo, "1.0.0", str(tmp_path / "p"))
    assert got == info
    with pytest.raises(oci.OciError, match="401") as err:
        oci.pull(basic_registry.address, repo, "1.0.0", str(tmp_path / "q"))
    assert PASSWORD not in str(err.value)


def test_token_auth(token_registry, repo, layout, tmp_path):
    layout_dir, info, _ = layout
    auth = (USER, PASSWORD)
    assert oci.push(layout_dir, token_registry.address, repo, "1.0.0", auth) == info["manifest_digest"]
    # the registry asked for a pull token first (HEAD), then for pull,push (upload)
    # (the registry lists a scope's actions in Go map order: "pull,push" or "push,pull")
    assert any(s.startswith(f"repository:{repo}:") and set(s.rsplit(":", 1)[1].split(",")) == {"pull", "push"}
               for s in token_registry.tokens.scopes), token_registry.tokens.scopes
    assert oci.tag_exists(token_registry.address, repo, "1.0.0", auth=auth) == info["manifest_digest"]
    assert oci.pull(token_registry.address, repo, "1.0.0", str(tmp_path / "p"), auth=auth) == info

    with pytest.raises(oci.OciError) as err:
        oci.push(layout_dir, token_registry.address, repo, "2.0.0", (USER, "wrong-" + PASSWORD))
    message = str(err.value)
    assert "token request failed: HTTP 401" in message and token_registry.tokens.realm in message
    assert PASSWORD not in message and "scope=" not in message   # no query string either
    with pytest.raises(oci.OciError, match="401"):
        oci.tag_exists(token_registry.address, repo, "1.0.0")
    assert oci.tag_exists(token_registry.address, repo, "2.0.0", auth=auth) is None
