"""Shared fixtures: small hand-made ONNX models and a runner for the real doit graph in a
temporary build folder (WASMFORGE_BUILD) with extra declarations (WASMFORGE_MODELS)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ResNet-50's threads variant has kernels of its own (two more stages, and results within
# the validate stage's tolerance of the portable module's rather than the same bytes)
RESNET50_THREADS_LOG = os.path.isdir(os.path.join(ROOT, "models", "resnet50.threads.tuning"))


def make_tiny_onnx(path, *, dynamic_batch=False, op=None, seed=0, hw=8):
    """conv -> relu -> (residual add) -> maxpool -> flatten -> gemm -> softmax, 1x3xHWxHW input."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.1, (3,)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.normal(0, 0.3, (10, 3 * (hw // 2) ** 2)).astype(np.float32), "G"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "C"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["a"]),
        helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "C"], ["l"], transB=1),
        helper.make_node("Softmax", ["l"], ["y"], axis=1),
    ]
    if op is not None:   # an extra operator on the output, e.g. one TVM cannot import
        nodes[-1] = helper.make_node("Softmax", ["l"], ["s"], axis=1)
        nodes.append(helper.make_node(op, ["s"], ["y"]))
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", T.FLOAT, [batch, 3, hw, hw])],
        [helper.make_tensor_value_info("y", T.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture
def tiny_onnx(tmp_path):
    return make_tiny_onnx(tmp_path / "tiny.onnx")


class Doit:
    """Runs the project's real task graph: ``python -m doit`` on dodo.py, in its own build
    folder, with model declarations from ``decls``."""

    def __init__(self, build, decls, store=None):
        self.build, self.decls = str(build), str(decls)
        # each test gets its own content-addressed store unless it shares one on purpose
        self.store = str(store or os.path.join(os.path.dirname(self.build), "store"))
        self.dist = os.path.join(os.path.dirname(self.build), "dist")
        os.makedirs(self.decls, exist_ok=True)

    def env(self, **extra):
        env = dict(os.environ, WASMFORGE_BUILD=self.build, WASMFORGE_MODELS=self.decls,
                   WASMFORGE_CACHE=self.store, WASMFORGE_DIST=self.dist)
        env.pop("WASMFORGE_REMOTE_CACHE", None)
        env.pop("WASMFORGE_REGISTRY", None)
        env.update(extra)
        return env

    def declare(self, filename, text):
        with open(os.path.join(self.decls, filename), "w") as f:
            f.write(text)

    def argv(self, *args):
        return [sys.executable, "-m", "doit", "-f", os.path.join(ROOT, "dodo.py"), *args]

    def __call__(self, *args, check=True, **env):
        res = subprocess.run(self.argv(*args), cwd=ROOT, env=self.env(**env), capture_output=True,
                             text=True, timeout=1800)
        if check and res.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def path(self, *parts):
        return os.path.join(self.build, *parts)


@pytest.fixture
def doit(tmp_path):
    return Doit(tmp_path / "build", tmp_path / "decls")


@pytest.fixture
def empty_registry():
    """The model registry emptied for one test (declarations made in-process), then restored."""
    from wasmforge import dsl

    saved = dict(dsl.REGISTRY)
    dsl.REGISTRY.clear()
    yield dsl.REGISTRY
    dsl.REGISTRY.clear()
    dsl.REGISTRY.update(saved)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    """The tiny model built once through the whole real graph, for tests that only read it."""
    base = tmp_path_factory.mktemp("tiny")
    d = Doit(base / "build", base / "decls")
    make_tiny_onnx(base / "decls" / "tiny.onnx")
    d.declare("tiny.toml", 'name = "tiny"\nonnx = "tiny.onnx"\n')
    d("build:tiny")
    return d


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ran(res) -> list[str]:
    """The stages doit executed (its ".  task:name" lines), in order; ``build:<model>`` is no
    stage (it only prints the summary), so it is left out."""
    tasks = [line[3:].split(":")[0] for line in res.stdout.splitlines() if line.startswith(".  ")]
    return [t for t in tasks if t != "build"]


@pytest.fixture
def no_tvm(tmp_path):
    """A PYTHONPATH entry that makes `import tvm` fail: a build that succeeds with it has
    not run TVM (every TVM stage was served from a cache)."""
    shim = tmp_path / "no_tvm"
    (shim / "tvm").mkdir(parents=True)
    (shim / "tvm" / "__init__.py").write_text('raise ImportError("TVM ran, but the cache should have served this stage")\n')
    return {"PYTHONPATH": str(shim)}


class Nginx:
    """Debian's nginx on loopback as a Bazel-protocol HTTP cache (WebDAV PUT), plus a second
    port where the same nginx misbehaves (500 for everything), and a third that redirects every
    request (307) to another host, 127.0.0.2, which logs the ``Authorization`` it receives
    (``received_authorization``) and answers 404."""

    def __init__(self, base, auth: tuple[str, str] | None = None):
        import socket

        self.base = str(base)
        self.data = os.path.join(self.base, "data")
        os.makedirs(self.data, exist_ok=True)
        os.chmod(self.data, 0o777)
        ports = []
        for host in ("127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"):
            s = socket.socket()
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
            s.close()
        self.port, self.bad_port, self.redirect_port, self.other_host_port = ports
        auth_conf = ""
        if auth:
            with open(os.path.join(self.base, "htpasswd"), "w") as f:
                f.write(f"{auth[0]}:{{PLAIN}}{auth[1]}\n")
            auth_conf = f'auth_basic "cache"; auth_basic_user_file {self.base}/htpasswd;'
        tmp = {k: os.path.join(self.base, k) for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        conf = f"""
daemon off;
worker_processes 1;
pid {self.base}/nginx.pid;
error_log {self.base}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {self.base}/access.log;
  log_format credentials '$server_addr $request_method $uri [$http_authorization]';
  client_body_temp_path {tmp['body']}; proxy_temp_path {tmp['proxy']};
  fastcgi_temp_path {tmp['fastcgi']}; uwsgi_temp_path {tmp['uwsgi']}; scgi_temp_path {tmp['scgi']};
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size 0;
    location / {{
      root {self.data};
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      {auth_conf}
    }}
  }}
  server {{
    listen 127.0.0.1:{self.bad_port};
    location / {{ return 500; }}
  }}
  server {{
    listen 127.0.0.1:{self.redirect_port};
    access_log {self.base}/redirect.log credentials;
    location / {{ return 307 http://127.0.0.2:{self.other_host_port}$request_uri; }}
  }}
  server {{
    listen 127.0.0.2:{self.other_host_port};
    access_log {self.base}/other_host.log credentials;
    location / {{ return 404; }}
  }}
}}
"""
        conf_path = os.path.join(self.base, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        if os.geteuid() == 0:   # workers would otherwise run as nobody
            with open(conf_path, "a") as f:
                f.write("user root root;\n")
        self.proc = subprocess.Popen(["nginx", "-p", self.base, "-c", conf_path, "-e", f"{self.base}/error.log"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import time
        import urllib.error
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1)
            except urllib.error.HTTPError:
                return  # any HTTP answer: it is up
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not start: {open(os.path.join(self.base, 'error.log')).read()}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/cache"

    @property
    def bad_url(self):
        return f"http://127.0.0.1:{self.bad_port}/cache"

    @property
    def redirect_url(self):
        return f"http://127.0.0.1:{self.redirect_port}/cache"

    def received_authorization(self, server: str, requests: int) -> list[tuple[str, str, str]]:
        """(method, path, Authorization or "") of each request ``server`` ("redirect" or
        "other_host") has logged, once it has logged ``requests`` of them (nginx logs a request
        just after answering it) or after 5 s."""
        import time

        path = os.path.join(self.base, f"{server}.log")
        rows = []
        for _ in range(50):
            if os.path.exists(path):
                with open(path) as f:
                    rows = [line.split(" ", 3) for line in f.read().splitlines()]
            if len(rows) >= requests:
                break
            time.sleep(0.1)
        return [(method, uri, "" if auth == "[-]" else auth[1:-1]) for _addr, method, uri, auth in rows]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def nginx(tmp_path):
    server = Nginx(tmp_path / "nginx")
    yield server
    server.stop()


def copy_checkout(dest) -> str:
    """The repository's sources (tracked and new files, as git sees them) copied to ``dest``:
    a clean second checkout with no build folder, store or releases."""
    import shutil

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = os.path.join(ROOT, f)
        if os.path.isfile(src):
            os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, f))
    return str(dest)


# end-to-end tests: they run the real pipeline (doit builds with TVM, clang, wasm-ld, wasm-opt)
# or compile kernels with TVM; `pytest -m "not slow"` runs the unit checks alone
SLOW_FIXTURES = {"doit", "tiny_build", "resnet50", "modules", "module", "built", "wasmtime_out", "corpus_results"}
SLOW_FILES = {"test_resnet50.py", "test_zoo_models.py", "test_readme.py", "test_publish.py", "test_remote_cache.py"}


# The tests run on two pytest-xdist workers (pyproject.toml), which take them scope by scope
# (``xdist_scope``): a test file's tests stay together, so its module fixtures build once;
# the tests that build in the repository's own build folder and store (what the README's
# first command makes) all run on one worker, in order, so no two doit processes share that
# folder; the tuning tests, each on a scratch model of its own, go one at a time. The
# slowest scopes are queued first (``FIRST``), so no worker is left with a long tail.
REPO_BUILD = {"test_resnet50.py", "test_zoo_models.py", "test_readme.py",
              "test_publish.py::test_resnet50_release_pushed_to_the_registry_pulls_back_bit_identical"}
FIRST = ("repo_build", "tests/tune/", "tests/test_corpus.py")


def xdist_scope(nodeid: str) -> str:
    """The unit of work one worker takes whole: ``repo_build``, the test itself (tuning
    tests), or its file."""
    path, _, test = nodeid.partition("::")
    name = os.path.basename(path)
    if {name, f"{name}::{test.split('[')[0]}"} & REPO_BUILD:
        return "repo_build"
    return nodeid if path.startswith("tests/tune/") else path


def queue_rank(nodeid: str) -> int:
    scope = xdist_scope(nodeid)
    return next((i for i, first in enumerate(FIRST) if scope.startswith(first)), len(FIRST))


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:        # pytest without xdist: the tests run in one process, in order
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:
    class ScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        return ScopeScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: queue_rank(item.nodeid))    # stable: each scope keeps its order


def run_on_host(mod, arrays, out_shape):
    """A kernel compiled for the host (LLVM) and run on ``arrays``: its output, of
    ``out_shape``, float32 (what a schedule's result is checked against)."""
    import tvm

    f = tvm.compile(mod, target="llvm")
    got = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    f(*[tvm.runtime.tensor(a) for a in arrays], got)
    return got.numpy()
