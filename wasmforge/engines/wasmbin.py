"""Just enough of the WebAssembly binary format: sections, imports, exports, custom
sections (read and append), and the ``target_features`` section. No dependencies, so any
host and any stage can read a module's metadata without instantiating it."""
from __future__ import annotations

import json

MAGIC = b"\0asm\x01\0\0\0"
METADATA_SECTION = "wasmforge.metadata"
CODE_SECTION, DATA_SECTION = 10, 11
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class WasmFormatError(ValueError):
    pass


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WasmFormatError("truncated LEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = _uleb(data, pos)
    return data[pos:pos + n].decode("utf-8"), pos + n


def sections(data: bytes):
    """Yield (id, name or None, payload) for every section."""
    if data[:8] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (bad magic or version)")
    pos = 8
    while pos < len(data):
        sid = data[pos]
        size, pos = _uleb(data, pos + 1)
        end = pos + size
        if end > len(data):
            raise WasmFormatError("truncated section")
        if sid == 0:
            name, p2 = _name(data, pos)
            yield sid, name, data[p2:end]
        else:
            yield sid, None, data[pos:end]
        pos = end


def custom_section(data: bytes, name: str) -> bytes | None:
    for sid, n, payload in sections(data):
        if sid == 0 and n == name:
            return payload
    return None


def add_custom_section(data: bytes, name: str, payload: bytes) -> bytes:
    if custom_section(data, name) is not None:
        raise WasmFormatError(f"custom section {name!r} already present")
    raw = name.encode()
    body = uleb(len(raw)) + raw + payload
    return data + b"\0" + uleb(len(body)) + body


def _spans(data: bytes):
    """Yield (id, start, payload start, end) for every section, copying nothing."""
    pos = 8
    while pos < len(data):
        size, p2 = _uleb(data, pos + 1)
        yield data[pos], pos, p2, p2 + size
        pos = p2 + size


def without_custom_section(data: bytes, name: str) -> bytes:
    """The module with every custom section called ``name`` removed."""
    out = bytearray(data[:8])
    for sid, start, p2, end in _spans(data):
        if not (sid == 0 and _name(data, p2)[0] == name):
            out += data[start:end]
    return bytes(out)


def replace_section(data: bytes, section_id: int, payload: bytes) -> bytes:
    """The module with its (only) section ``section_id`` holding ``payload`` instead."""
    out = bytearray(data[:8])
    for sid, start, _, end in _spans(data):
        out += (bytes([sid]) + uleb(len(payload)) + payload) if sid == section_id else data[start:end]
    return bytes(out)


def imports(data: bytes) -> list[dict]:
    out = []
    for sid, _, payload in sections(data):
        if sid != 2:
            continue
        count, pos = _uleb(payload, 0)
        for _ in range(count):
            module, pos = _name(payload, pos)
            field, pos = _name(payload, pos)
            kind = payload[pos]
            pos += 1
            if kind == 0:      # func: type index
                _, pos = _uleb(payload, pos)
            elif kind == 1:    # table: reftype + limits
                pos = _limits(payload, pos + 1)
            elif kind == 2:    # memory: limits
                pos = _limits(payload, pos)
            elif kind == 3:    # global: valtype + mut
                pos += 2
            elif kind == 4:    # tag: attribute + type index
                _, pos = _uleb(payload, pos + 1)
            else:
                raise WasmFormatError(f"unknown import kind {kind}")
            out.append({"module": module, "name": field, "kind": _KINDS[kind]})
    return out


def _limits(payload: bytes, pos: int) -> int:
    flags = payload[pos]
    _, pos = _uleb(payload, pos + 1)
    if flags & 1:
        _, pos = _uleb(payload, pos)
    return pos


def exports(data: bytes) -> list[dict]:
    out = []
    for sid, _, payload in sections(data):
        if sid != 7:
            continue
        count, pos = _uleb(payload, 0)
        for _ in range(count):
            name, pos = _name(payload, pos)
            kind = payload[pos]
            _, pos = _uleb(payload, pos + 1)
            out.append({"name": name, "kind": _KINDS.get(kind, str(kind))})
    return out


def target_features(data: bytes) -> list[str]:
    """The features a linked module uses, from the ``target_features`` section wasm-ld writes."""
    payload = custom_section(data, "target_features")
    if payload is None:
        return []
    count, pos = _uleb(payload, 0)
    feats = []
    for _ in range(count):
        prefix = chr(payload[pos])
        name, pos = _name(payload, pos + 1)
        if prefix in "+=":
            feats.append(name)
    return feats


def metadata(data: bytes) -> dict:
    payload = custom_section(data, METADATA_SECTION)
    if payload is None:
        raise WasmFormatError(f"no {METADATA_SECTION!r} custom section: not a wasmforge module")
    return json.loads(payload.decode("utf-8"))


def is_shared_memory(imp: dict) -> bool:
    """The memory import of the threads variant (``env.memory``, shared by every instance)."""
    return (imp["module"], imp["name"], imp["kind"]) == ("env", "memory", "memory")


def allowed_import(imp: dict, threads: bool) -> bool:
    """What a wasmforge module may import: WASI, and for the threads variant the shared
    memory every instance (one per thread) is given."""
    return imp["module"] == "wasi_snapshot_preview1" or (threads and is_shared_memory(imp))
