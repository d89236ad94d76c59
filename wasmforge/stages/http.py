"""Stages 9 and 10, http and http_aot: the model served over HTTP, as a ``wasi:http`` component.

``http``: clang compiles ``runtime/wasmforge_http.c``, the Open Inference Protocol for any
model, into a component of the world ``wasmforge:model/http-server`` (it imports the model's
``wasmforge:model/inference`` and exports ``wasi:http/incoming-handler``); ``wasm-tools
compose`` plugs the checked model component into it. The result, ``<model>.http.wasm``, is
checked the way a client would: ``wasmtime serve`` runs it on a free loopback port, and its
answer to a binary-extension infer request on a seeded input must be the model component's
exact bytes. Only then is it published.

``http_aot``: ``wasmtime compile`` makes ``<model>.http.cwasm``, which ``doit serve:<model>``
runs with ``wasmtime serve --allow-precompiled``: no compilation when the server starts.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import numpy as np

from wasmforge import component as wit
from wasmforge.component import host as component_host
from wasmforge.errors import StageError
from wasmforge.stages import validate
from wasmforge.store import digests, files

STAGE = "http"
CODE = (__file__, wit.__file__, component_host.__file__)
HANDLER_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime",
                              "wasmforge_http.c")
HANDLER_WORLD = "http-server"
START_TIMEOUT_S = 300.0   # wasmtime compiles the component before it listens: ResNet-50 takes about 20 s
# requests an instance serves before wasmtime serve drops it (its default for a WASI 0.2
# component is 1: a new instance per request). A new instance makes its Winograd weights on
# its first run, so reuse saves that on every request after the first; the bound caps what
# an instance could accumulate.
INSTANCE_REUSE = 10000


def serve_argv(wasmtime_cli: str, component: str, host: str, port: int, precompiled: bool) -> list[str]:
    """The ``wasmtime serve`` command line, for the stage's check, the tests and ``doit serve``."""
    return [wasmtime_cli, "serve", "--addr", f"{host}:{port}", "--max-instance-reuse-count", str(INSTANCE_REUSE),
            *(["--allow-precompiled"] if precompiled else []), component]


def _run(argv: list[str], what: str, path: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-12:])
        raise StageError(STAGE, path, f"{what} failed (exit {res.returncode}):\n  $ {' '.join(argv)}\n{tail}")


def handler_argv(clang_path: str, out: str) -> list[str]:
    return [clang_path, "--target=wasm32-wasi", "-O2", "-mexec-model=reactor", HANDLER_SOURCE, "-o", out]


def make(model_component: str, clang, wasm_tools, out: str, work: str) -> None:
    """The handler component, composed with ``model_component``, -> ``out``."""
    os.makedirs(work, exist_ok=True)
    core, embedded, handler = (os.path.join(work, f) for f in ("handler.core.wasm", "handler.embedded.wasm",
                                                                 "handler.wasm"))
    _run(handler_argv(clang.path, core), "compiling wasmforge_http.c", HANDLER_SOURCE)
    _run([wasm_tools.path, "component", "embed", wit.WIT_DIR, "--world", HANDLER_WORLD, core, "-o", embedded],
         "wasm-tools component embed", HANDLER_SOURCE)
    _run([wasm_tools.path, "component", "new", embedded, "-o", handler], "wasm-tools component new", HANDLER_SOURCE)
    # compose names a dependency after its file: the handler imports the instance `model`
    plug = os.path.join(work, "model.wasm")
    files.link_or_copy(model_component, plug)
    _run([wasm_tools.path, "compose", handler, "-d", plug, "-o", out], "wasm-tools compose", model_component)
    for f in (core, embedded, handler, plug):
        os.unlink(f)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until something accepts on the loopback ``port``; raises if ``proc`` exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                out = proc.stdout.read()[-2000:] if proc.stdout else ""
                raise RuntimeError(f"the server exited ({proc.returncode}) before it listened: {out}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listened on port {port} within {timeout:.0f} s") from None
            time.sleep(0.05)


class Server:
    """``wasmtime serve`` on a loopback port, for as long as the ``with`` block lasts."""

    def __init__(self, wasmtime_cli: str, component: str, port: int | None = None, precompiled: bool = False,
                 timeout: float = START_TIMEOUT_S):
        self.port = port or free_port()
        self.argv = serve_argv(wasmtime_cli, component, "127.0.0.1", self.port, precompiled)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_listening(self.port, self.proc, self.timeout)
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 300) -> tuple[int, dict, bytes]:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def binary_infer_body(feeds: dict[str, np.ndarray], binary_output: bool = True) -> tuple[bytes, dict]:
    """An infer request in the binary tensor extension: the JSON header, then each input's
    bytes; (body, headers)."""
    inputs = [{"name": k, "shape": list(v.shape), "datatype": wit.DATATYPES[v.dtype.name].upper(),
               "parameters": {"binary_data_size": v.nbytes}} for k, v in feeds.items()]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": binary_output}}).encode()
    body = header + b"".join(np.ascontiguousarray(v).tobytes() for v in feeds.values())
    return body, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def binary_outputs(body: bytes, headers: dict) -> dict[str, np.ndarray]:
    """The outputs of a binary-extension answer, by name."""
    n = int(headers["inference-header-content-length"])
    head, at, out = json.loads(body[:n]), n, {}
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = wit.NUMPY_DTYPES[o["datatype"].lower()]
        out[o["name"]] = np.frombuffer(body[at:at + size], dtype).reshape(o["shape"])
        at += size
    return out


def check(http_wasm: str, model_component: str, onnx_path: str, seed: int, wasmtime_cli: str,
          ranges: dict | None = None) -> dict:
    """One binary infer request to the served component, against the model component's answer."""
    comp = component_host.ComponentModel(model_component)
    decls = [{"name": i["name"], "dtype": wit.NUMPY_DTYPES[i["datatype"]], "shape": i["shape"]}
             for i in comp.metadata["inputs"]]
    feeds = validate.seeded_inputs(decls, seed, validate.index_bounds(onnx_path), ranges)
    want = dict(zip([o["name"] for o in comp.metadata["outputs"]], comp.run(feeds)))
    body, headers = binary_infer_body(feeds)
    t0 = time.perf_counter()
    with Server(wasmtime_cli, http_wasm) as server:
        start_s = time.perf_counter() - t0
        status, rh, rb = request(server.port, "POST", f"/v2/models/{comp.metadata['name']}/infer", body, headers)
        live = request(server.port, "GET", "/v2/health/live")[0]
    problems = []
    if status != 200:
        problems.append(f"infer answered {status}: {rb[:300]!r}")
    else:
        got = binary_outputs(rb, rh)
        same = {k: bool(k in got and np.array_equal(got[k], w, equal_nan=True)) for k, w in want.items()}
        if not all(same.values()):
            problems.append(f"outputs differ from the model component's: {same}")
    if live != 200:
        problems.append(f"/v2/health/live answered {live}")
    return {"passed": not problems, "problems": problems, "seed": seed, "serve_start_s": round(start_s, 2)}


def run(model_component: str, onnx_path: str, seeds, ranges: dict | None, clang, wasm_tools, wasmtime_cli,
        work_out: str, published: str, report_path: str) -> dict:
    t0 = time.perf_counter()
    if os.path.exists(published):
        os.unlink(published)
    make(model_component, clang, wasm_tools, work_out, os.path.join(os.path.dirname(work_out), "work"))
    report = check(work_out, model_component, onnx_path, seeds[0], wasmtime_cli.path, ranges)
    report.update({"bytes": os.path.getsize(work_out), "component_sha256": digests.file_sha256(model_component),
                   "seconds": round(time.perf_counter() - t0, 3),
                   "http": os.path.relpath(published) if report["passed"] else None})
    files.write_json(report_path, report)
    shutil.rmtree(os.path.join(os.path.dirname(work_out), "work"), ignore_errors=True)
    if not report["passed"]:
        raise StageError(STAGE, work_out, f"the HTTP component's check failed: {'; '.join(report['problems'])}; "
                                          f"see {report_path}")
    files.place(work_out, published)
    return {"passed": True, "bytes": report["bytes"]}


def compile_aot(http_wasm: str, wasmtime_cli, out: str) -> dict:
    """``wasmtime compile``: the served component, compiled ahead of time for this CPU."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    _run([wasmtime_cli.path, "compile", http_wasm, "-o", out], "wasmtime compile", http_wasm)
    return {"bytes": os.path.getsize(out)}
