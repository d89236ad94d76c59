"""Release: a versioned, reproducible bundle of a validated module, and OCI publishing.

``doit publish:<model>`` writes ``<dist>/<model>/<version>/``:

    <model>.wasm                 the validated, optimized module (unchanged bytes)
    <model>.threads.wasm         its threads variant (shared memory, N host threads), when
                                 it was built and validated
    lib<model>.a, <model>.h,     the same model as a static library for relinking into the
    wasmforge.h                  user's own WASI program (see wasmforge/release/staticlib.py)
    manifest.json                what was built from what: model and version, sha256 of the
                                 source ONNX and of the tuning log, toolchain versions, target
                                 features, inputs and outputs, validation results, benchmark
                                 figures when ``bench.json`` exists
    SHA256SUMS                   ``sha256sum -c`` format
    <model>-<version>.tar.gz     the files above, deterministic: sorted entries, mtime 0,
                                 owner 0:0, mode 0644, no gzip timestamp or name
    oci/                         an OCI image layout of the module (wasm artifact media types)

and, when ``WASMFORGE_REGISTRY`` is set (``host:port[/namespace]``), pushes the layout as
``<namespace>/<model>:<version>`` (credentials: WASMFORGE_REGISTRY_USER/_PASSWORD).

Refused, naming the file: a model whose validation did not pass; a version already released
(locally or in the registry) with a different module. A release is immutable: publishing the
same module again changes nothing. The release folder is written next to
its final place and renamed into it, so it never exists half-written.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile

from wasmforge import ROOT
from wasmforge.engines import wasmbin
from wasmforge.errors import StageError
from wasmforge.release import oci, staticlib
from wasmforge.store import digests, files

STAGE = "publish"
TAR_MTIME = 0


def dist_root() -> str:
    return os.path.abspath(os.environ.get("WASMFORGE_DIST", os.path.join(ROOT, "dist")))


def _validation_summary(report: dict) -> dict:
    """The deterministic part of the validation report (no timings)."""
    return {"passed": report["passed"], "tolerance": report["tolerance"],
            "inputs": [{**{k: r[k] for k in ("seed", "reference") if k in r},
                        "outputs": {k: {f: v[f] for f in ("max_abs_error", "max_rel_error", "top1_equal",
                                                           "top5_overlap", "top1") if f in v}
                                    for k, v in r["outputs"].items()}}
                       for r in report["inputs"]]}


def manifest(model, version: str, wasm: str, report: dict, source_sha: str, tuning: dict,
             tools: dict, bench: dict | None) -> dict:
    with open(wasm, "rb") as f:
        data = f.read()
    meta = wasmbin.metadata(data)
    m = {"model": model, "version": version, "module": {"file": os.path.basename(wasm),
                                                        "sha256": digests.digest_bytes(data), "bytes": len(data)},
         "source": {"file": meta["source"]["file"], "sha256": source_sha},
         "tuning_log": tuning, "toolchain": tools, "target": meta["build"]["target"],
         "features": wasmbin.target_features(data), "opt": meta.get("opt"),
         "inputs": meta["inputs"], "outputs": meta["outputs"], "abi": meta["abi"],
         "validation": _validation_summary(report)}
    if bench:
        m["benchmark"] = {k: v for k, v in bench.items() if k != "systems"} | {
            "median_ms": {k: s.get("median_ms") for k, s in bench["systems"].items()}}
    return m


def deterministic_tar_gz(contents: dict[str, bytes]) -> bytes:
    """A .tar.gz that depends only on the names and bytes given."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(contents):
            info = tarfile.TarInfo(name)
            info.size = len(contents[name])
            info.mtime = TAR_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(contents[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def sha256sums(contents: dict[str, bytes]) -> bytes:
    return "".join(f"{digests.digest_bytes(contents[n])}  {n}\n" for n in sorted(contents)).encode()


def registry_target(model: str) -> tuple[str, str] | None:
    """(registry, repository) from ``WASMFORGE_REGISTRY=[http(s)://]host[:port][/namespace]``,
    or None. The scheme, when given, stays with the registry (``oci`` reads it); a bare host
    is reached over plain HTTP."""
    spec = os.environ.get("WASMFORGE_REGISTRY", "").strip()
    if not spec:
        return None
    scheme, sep, rest = spec.partition("://")
    host, _, namespace = (rest if sep else spec).partition("/")
    namespace = namespace.strip("/")
    return (f"{scheme}://{host}" if sep else host), (f"{namespace}/{model}" if namespace else model)


def _validated(wasm: str, report_path: str, what: str) -> dict:
    if not os.path.isfile(report_path):
        raise StageError(STAGE, report_path, "no validation report: build the model first (doit build:<model>)")
    report = files.read_json(report_path)
    if not report.get("passed"):
        raise StageError(STAGE, report_path, f"validation did not pass: refusing to publish this {what}")
    if not os.path.isfile(wasm) or digests.file_sha256(wasm) != report.get("module_sha256"):
        raise StageError(STAGE, wasm, f"the {what} is missing or is not the one the report validated")
    return report


def _same_module(released_manifest: str, man: dict) -> bool:
    """Whether the release whose manifest.json is ``released_manifest`` has ``man``'s module."""
    return files.read_json(released_manifest)["module"]["sha256"] == man["module"]["sha256"]


def run(model: str, version: str, wasm: str, report_path: str, source_sha: str, tuning: dict,
        tools: dict, bench_path: str | None, objects: list[str], ar_path: str,
        wasm_threads: str | None = None, report_threads_path: str | None = None) -> dict:
    """``wasm_threads``/``report_threads_path``: the threads variant, released beside the
    module when given (it must have passed its own validation)."""
    report = _validated(wasm, report_path, "module")
    bench = files.read_json(bench_path) if bench_path and os.path.isfile(bench_path) else None
    man = manifest(model, version, wasm, report, source_sha, tuning, tools, bench)
    with open(wasm, "rb") as f:
        module = f.read()
    wasm_name = f"{model}.wasm"
    bundle = {wasm_name: module}
    if wasm_threads:
        report_t = _validated(wasm_threads, report_threads_path, "threads variant")
        name_t = f"{model}.threads.wasm"
        with open(wasm_threads, "rb") as f:
            bundle[name_t] = module_t = f.read()
        man["variants"] = {"threads": {
            "file": name_t, "sha256": digests.digest_bytes(module_t), "bytes": len(module_t),
            "validated_with_threads": report_t["threads"], "features": wasmbin.target_features(module_t),
            "validation": _validation_summary(report_t)}}
    bundle["manifest.json"] = files.json_bytes(man)
    # the static library for relinking (wasmforge/release/staticlib.py): lib<model>.a and its headers
    with tempfile.TemporaryDirectory(prefix=".tmp-lib-") as libdir:
        lib = staticlib.run(model, objects, wasmbin.metadata(module), ar_path, libdir)
        for key in ("archive", "header", "abi_header"):
            with open(lib[key]["path"], "rb") as f:
                bundle[os.path.basename(lib[key]["path"])] = f.read()
    bundle["SHA256SUMS"] = sha256sums(bundle)
    tarball = deterministic_tar_gz(bundle)
    tar_name = f"{model}-{version}.tar.gz"

    final = os.path.join(dist_root(), model, version)
    existing = os.path.join(final, tar_name)
    released = os.path.join(final, "manifest.json")
    if os.path.isfile(released):
        # a release is immutable: the same module again is a no-op (even if, say, newer
        # benchmark figures would change the manifest); another module is refused
        if not _same_module(released, man):
            raise StageError(STAGE, existing, f"{model} {version} is already released with different "
                                              "content: bump the model's version to publish this build")
        with open(existing, "rb") as f:
            tarball = f.read()
    else:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{version}.", dir=os.path.dirname(final))
        try:
            for name, data in {**bundle, tar_name: tarball}.items():
                with open(os.path.join(staging, name), "wb") as f:
                    f.write(data)
            oci.write_layout(os.path.join(staging, wasm_name), os.path.join(staging, "oci"),
                             {"org.opencontainers.image.title": model,
                              "org.opencontainers.image.version": version,
                              "dev.wasmforge.source.sha256": source_sha}, version)
            os.chmod(staging, 0o755)
            try:
                os.rename(staging, final)
            except OSError:   # another publisher won the race: compare with what it wrote
                if not _same_module(released, man):
                    raise StageError(STAGE, existing, "released concurrently with different content") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    result = {"release": final, "tarball_sha256": digests.digest_bytes(tarball),
              "module_sha256": man["module"]["sha256"]}
    target = registry_target(model)
    if target:
        registry, repo = target
        auth = oci.auth_from_env()
        layout = os.path.join(final, "oci")
        want = files.read_json(os.path.join(layout, "index.json"))["manifests"][0]["digest"]
        have = oci.tag_exists(registry, repo, version, auth)
        if have and have != want:
            raise StageError(STAGE, f"{oci.redact(registry)}/{repo}:{version}",
                             f"the registry already has this version with other content ({have}); "
                             "bump the model's version")
        if not have:
            oci.push(layout, registry, repo, version, auth)
        result["oci"] = {"reference": f"{oci.redact(registry)}/{repo}:{version}", "digest": want,
                         "pushed": not have}
    return result


def publish_model(m) -> dict:
    """``doit publish:<model>``: release model ``m``'s validated build (``build:<model>``
    first), recording every tool that made it and the digests of its tuning logs."""
    from wasmforge import graph, toolchain
    from wasmforge.stages import link, relax_build

    p = graph.Paths(m)
    tools = {t.name: t.identity() for t in (toolchain.clang(), toolchain.wasm_ld(), toolchain.wasm_opt())}
    for pkg in ("apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "wasmtime"):
        tools[pkg] = toolchain.python_package(pkg)
    tools["llvm-ar"] = toolchain.llvm_ar().identity()
    tuning = {os.path.basename(f): digests.file_sha256(f) for f in relax_build.tuning_files(m.tuning_dir())}
    # the threads variant's own log, when the model has one
    tuning.update({f"threads/{os.path.basename(f)}": digests.file_sha256(f)
                   for f in relax_build.tuning_files(m.threads_tuning_dir())})
    objects = [p.stage("link", "obj", o) for o in link.OBJECTS] + [p.stage("emit", "kernels.o")]
    return run(m.name, m.version, p.published, p.report(), digests.file_sha256(p.source), tuning, tools,
               os.path.join(p.dir, "bench.json"), objects, toolchain.llvm_ar().path,
               p.published_threads, p.report(graph.THREADS))
