"""The model over HTTP (``doit http:<model>``, ``doit serve:<model>``): the real ``wasmtime
serve`` on loopback, spoken to by real HTTP clients (``http.client`` and curl), in the Open
Inference Protocol."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from wasmforge import toolchain
from wasmforge.stages import http
from wasmforge.store import digests

SHAPE = [1, 3, 8, 8]


@pytest.fixture(scope="module")
def served(tiny_build):
    """The tiny model's HTTP component, AOT-compiled, served for the whole module."""
    tiny_build("http_aot:tiny")
    cwasm = tiny_build.path("tiny", "http_aot", "tiny.http.cwasm")
    with http.Server(toolchain.wasmtime_cli().path, cwasm, precompiled=True) as server:
        yield server, tiny_build


def post(server, body, headers=None, path="/v2/models/tiny/infer"):
    status, h, b = http.request(server.port, "POST", path, body, headers)
    return status, h, b


def json_body(x, **extra):
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist(), **extra}]}).encode()


def reference(d, x):
    import onnxruntime as ort

    return ort.InferenceSession(os.path.join(d.decls, "tiny.onnx")).run(None, {"x": x})[0]


def test_http_stage_checks_the_served_component_and_publishes_it(served):
    _, d = served
    report = json.load(open(d.path("tiny", "report.http.json")))
    assert report["passed"] is True and report["problems"] == []
    assert report["component_sha256"] == digests.file_sha256(d.path("tiny", "tiny.component.wasm"))
    assert os.path.isfile(d.path("tiny", "tiny.http.wasm"))
    wit = subprocess.run([toolchain.wasm_tools().path, "component", "wit", d.path("tiny", "tiny.http.wasm")],
                         capture_output=True, text=True, check=True).stdout
    assert "export wasi:http/incoming-handler@0.2.12;" in wit
    assert "wasmforge:model" not in wit.split("package", 1)[0]   # the model is inside, not imported


def test_health_server_and_model_metadata(served):
    server, _ = served
    for path, want in (("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True}),
                       ("/v2/models/tiny/ready", {"name": "tiny", "ready": True}),
                       ("/v2/models/tiny/versions/1/ready", {"name": "tiny", "ready": True})):
        status, h, b = http.request(server.port, "GET", path)
        assert (status, json.loads(b)) == (200, want), path
        assert h["content-type"] == "application/json"
    status, _, b = http.request(server.port, "GET", "/v2")
    assert status == 200 and "binary_tensor_data" in json.loads(b)["extensions"]
    status, _, b = http.request(server.port, "GET", "/v2/models/tiny")
    assert status == 200
    assert json.loads(b) == {"name": "tiny", "versions": ["1"], "platform": "wasmforge",
                             "inputs": [{"name": "x", "datatype": "FP32", "shape": SHAPE}],
                             "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 10]}]}


def test_json_infer_agrees_with_onnxruntime_and_with_the_binary_extension(served):
    server, d = served
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    status, h, b = post(server, json.dumps({"id": "req-7", "inputs": [
        {"name": "x", "shape": SHAPE, "datatype": "FP32", "data": x.tolist()}]}).encode())   # nested data
    assert status == 200, b
    answer = json.loads(b)
    assert answer["model_name"] == "tiny" and answer["id"] == "req-7"
    out, = answer["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("y", "FP32", [1, 10])
    got = np.array(out["data"], np.float32).reshape(1, 10)
    want = reference(d, x)
    assert np.abs(got - want).max() <= 1e-5 + 1e-4 * np.abs(want).max()
    assert got.argmax() == want.argmax()
    # the binary extension: the same inputs as raw bytes, the outputs as raw bytes
    body, headers = http.binary_infer_body({"x": x})
    status, h, b = post(server, body, headers)
    assert status == 200 and h["content-type"] == "application/octet-stream"
    binary = http.binary_outputs(b, h)["y"]
    assert np.array_equal(binary, got)   # JSON's 9 significant digits give back every float32 bit
    # one output asked for in binary, by name
    status, h, b = post(server, json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP32",
                                                        "data": x.ravel().tolist()}],
                                            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode())
    assert status == 200 and np.array_equal(http.binary_outputs(b, h)["y"], got)


BAD = {
    "malformed JSON": (b'{"inputs": [', 400),
    "the body must be an object": (b"[1, 2]", 400),
    "has no \\\"inputs\\\"": (b"{}", 400),
    "shape [1, 3, 8, 9], the model takes [1, 3, 8, 8]":
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 8, 9], "datatype": "FP32", "data": [0.0] * 216}]}), 400),
    "datatype INT64, the model takes FP32":
        (json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "INT64", "data": [0] * 192}]}), 400),
    "unknown datatype": (json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP8", "data": []}]}), 400),
    "no input named 'q'": (json.dumps({"inputs": [{"name": "q", "shape": SHAPE, "datatype": "FP32", "data": []}]}), 400),
    "missing input 'x'": (json.dumps({"inputs": []}), 400),
    "given twice": (json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP32", "data": [0.0] * 192}] * 2}), 400),
    "\\\"data\\\" holds 2 values, its shape 192":
        (json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP32", "data": [1, 2]}]}), 400),
    "\\\"data\\\" must hold numbers":
        (json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP32", "data": ["a"] * 192}]}), 400),
    "no output named 'z'": (json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP32", "data": [0.0] * 192}],
                                        "outputs": [{"name": "z"}]}), 400),
}


@pytest.mark.parametrize("problem", list(BAD))
def test_every_bad_request_gets_a_4xx_naming_the_problem_and_the_server_stays_up(served, problem):
    server, _ = served
    body, want = BAD[problem]
    status, h, b = post(server, body if isinstance(body, bytes) else body.encode())
    assert status == want and h["content-type"] == "application/json"
    assert problem in b.decode(), b
    assert "error" in json.loads(b)
    assert http.request(server.port, "GET", "/v2/health/live")[0] == 200 and server.alive


def test_bad_routes_and_methods(served):
    server, _ = served
    status, _, b = http.request(server.port, "GET", "/v2/models/resnet9")
    assert status == 404 and "unknown model 'resnet9': this server serves 'tiny'" in json.loads(b)["error"]
    status, _, b = post(server, b"{}", path="/v2/models/resnet9/infer")
    assert status == 404
    status, _, b = http.request(server.port, "GET", "/predict")
    assert status == 404 and "/v2/models/<name>/infer" in json.loads(b)["error"]
    status, _, b = http.request(server.port, "GET", "/v2/models/tiny/versions/2")
    assert status == 404
    status, h, b = http.request(server.port, "GET", "/v2/models/tiny/infer")
    assert status == 405 and h["allow"] == "POST"
    status, h, _ = http.request(server.port, "DELETE", "/v2/health/live")
    assert status == 405 and h["allow"] == "GET"


def test_binary_extension_errors(served):
    server, _ = served
    x = np.zeros(SHAPE, np.float32)
    body, headers = http.binary_infer_body({"x": x})
    status, _, b = post(server, body[:-4], headers)
    assert status == 400 and "ends before its binary data" in b.decode()
    status, _, b = post(server, body + b"\0\0\0\0", headers)
    assert status == 400 and "no input's binary_data_size accounts for" in b.decode()
    status, _, b = post(server, body, {**headers, "Inference-Header-Content-Length": str(len(body) + 1)})
    assert status == 400 and "Inference-Header-Content-Length" in b.decode()
    bad = json.dumps({"inputs": [{"name": "x", "shape": SHAPE, "datatype": "FP32",
                                  "parameters": {"binary_data_size": 5}}]}).encode()
    status, _, b = post(server, bad + b"\0" * 5, {"Inference-Header-Content-Length": str(len(bad))})
    assert status == 400 and "binary_data_size does not match" in b.decode()


def _raw(port: int, head: bytes, body_chunks=()) -> bytes:
    """A request written by hand on a socket: a client that stops sending once answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head)
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except OSError:   # the server answered and closed: what a refused upload looks like
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + int(
                [ln for ln in data.split(b"\r\n") if ln.lower().startswith(b"content-length:")][0].split(b":")[1]):
            more = s.recv(65536)
            if not more:
                break
            data += more
    return data


def test_a_body_too_large_gets_413(served):
    server, _ = served
    # declared too large: refused before any byte of it is read
    answer = _raw(server.port, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than this model's requests can be" in answer
    # streamed without a length: refused once it passes the limit
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b" " * (1 << 16))
    answer = _raw(server.port, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                  [chunk] * 40)
    assert answer.startswith(b"HTTP/1.1 413")
    assert http.request(server.port, "GET", "/v2/health/live")[0] == 200 and server.alive


def test_200_sequential_requests_and_4_concurrent_clients(served):
    server, _ = served
    x = np.random.default_rng(11).standard_normal(SHAPE).astype(np.float32)
    body, headers = http.binary_infer_body({"x": x})
    first = None
    for _ in range(200):
        status, h, b = post(server, body, headers)
        assert status == 200
        y = http.binary_outputs(b, h)["y"]
        first = y if first is None else first
        assert np.array_equal(y, first)
    results, errors = [], []

    def client(seed):
        try:
            xi = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
            bi, hi = http.binary_infer_body({"x": xi})
            for _ in range(25):
                status, h, b = post(server, bi, hi)
                results.append((seed, status, http.binary_outputs(b, h)["y"].tobytes() if status == 200 else b))
        except Exception as e:   # reported below, with the client's seed
            errors.append(f"client {seed}: {e!r}")

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert len(results) == 100 and all(status == 200 for _, status, _ in results)
    for seed in range(4):   # every client got its own answer, the same each time
        assert len({r for s, _, r in results if s == seed}) == 1
    assert http.request(server.port, "GET", "/v2/health/ready")[0] == 200 and server.alive


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_doit_serve_answers_curl(served, tmp_path):
    """The README's example: `doit serve:<model> --port N`, then curl."""
    _, d = served
    port = http.free_port()
    proc = subprocess.Popen(d.argv("serve:tiny", "--port", str(port)), env=d.env(), cwd=os.path.dirname(d.decls),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        http.wait_listening(port, proc, 120)
        x = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
        (tmp_path / "req.json").write_bytes(json_body(x))
        out = subprocess.run(["curl", "-s", "-X", "POST", f"http://127.0.0.1:{port}/v2/models/tiny/infer",
                              "-H", "Content-Type: application/json", "--data-binary", f"@{tmp_path / 'req.json'}"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        got = np.array(json.loads(out)["outputs"][0]["data"], np.float32)
        assert got.argmax() == reference(d, x).argmax()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_serve_without_a_build_says_what_to_run(tiny_build):
    res = subprocess.run([sys.executable, "-m", "wasmforge", "serve", "tiny"], env=tiny_build.env(
        WASMFORGE_BUILD=str(tiny_build.build) + "-none"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "doit serve:tiny" in res.stderr and "Traceback" not in res.stderr


def test_coldstart_times_a_fresh_server_to_its_first_answer(served):
    """bench.coldstart's measurement of ours: a new wasmtime serve, timed to a real answer."""
    from wasmforge.bench import coldstart

    _, d = served
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    body, headers = http.binary_infer_body({"x": x})
    seconds = coldstart.ours_once(toolchain.wasmtime_cli().path, d.path("tiny", "http_aot", "tiny.http.cwasm"),
                                  "tiny", body, headers)
    assert 0 < seconds < 60
    with pytest.raises(RuntimeError, match="got 404"):
        coldstart.ours_once(toolchain.wasmtime_cli().path, d.path("tiny", "http_aot", "tiny.http.cwasm"),
                            "resnet9", body, headers)
