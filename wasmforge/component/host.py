"""Call a model component (``<model>.component.wasm``) from Python, through wasmtime's
component API: the same calls any component host makes.

    from wasmforge.component.host import ComponentModel
    m = ComponentModel("build/resnet50/resnet50.component.wasm")
    m.metadata                     # {"name", "inputs": [{name, datatype, shape}], "outputs": [...]}
    probs = m.run({"gpu_0/data_0": x})   # a list of arrays, in metadata's output order

``run`` sends the arrays as they are: a wrong name, datatype or shape comes back as the
component's own error (``ComponentError``), which is what a test of those errors needs.
"""
from __future__ import annotations

import numpy as np

from wasmforge.component import DATATYPES, INTERFACE, NUMPY_DTYPES


class ComponentError(RuntimeError):
    """``infer`` returned its error case: the message is the component's."""


def _info(rec) -> dict:
    return {"name": rec.name, "datatype": rec.datatype, "shape": list(rec.shape)}


class ComponentModel:
    def __init__(self, path: str, engine=None):
        import wasmtime
        from wasmtime import component as wc

        self._wc = wc
        self.engine = engine or wasmtime.Engine()
        self.component = wc.Component.from_file(self.engine, path)
        linker = wc.Linker(self.engine)
        linker.add_wasip2()
        self.store = wasmtime.Store(self.engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        self.instance = linker.instantiate(self.store, self.component)
        iface = self.instance.get_export_index(self.store, INTERFACE)
        if iface is None:
            raise ValueError(f"{path}: the component does not export {INTERFACE}")
        self._metadata = self._func(iface, "metadata")
        self._infer = self._func(iface, "infer")
        info = self._call(self._metadata)
        self.metadata = {"name": info.name, "inputs": [_info(i) for i in info.inputs],
                         "outputs": [_info(o) for o in info.outputs]}

    def _func(self, iface, name: str):
        idx = self.instance.get_export_index(self.store, name, iface)
        return self.instance.get_func(self.store, idx)

    def _call(self, f, *args):
        try:
            return f(self.store, *args)
        finally:
            f.post_return(self.store)

    def infer(self, tensors: list[dict]):
        """``infer`` on tensors given as {name, datatype, shape, data: bytes}; the outputs as
        such dicts, or ``ComponentError``."""
        recs = []
        for t in tensors:
            r = self._wc.Record()
            r.name, r.datatype, r.shape, r.data = t["name"], t["datatype"], list(t["shape"]), t["data"]
            recs.append(r)
        out = self._call(self._infer, recs)
        if isinstance(out, self._wc.Variant):   # a result whose cases lift to one Python type
            if out.tag == "err":
                raise ComponentError(out.payload)
            out = out.payload
        if isinstance(out, str):
            raise ComponentError(out)
        return [{**_info(o), "data": bytes(o.data)} for o in out]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [{"name": k, "datatype": DATATYPES[np.asarray(v).dtype.name], "shape": np.shape(v),
                    "data": np.ascontiguousarray(v).tobytes()} for k, v in feeds.items()]
        return [np.frombuffer(o["data"], NUMPY_DTYPES[o["datatype"]]).reshape(o["shape"]).copy()
                for o in self.infer(tensors)]
