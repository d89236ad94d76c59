"""How the import stage brings an ONNX graph into Relax where TVM's ONNX frontend alone does
it badly or not at all. Three kinds of fix, each small, and all but one exact (the same values):

- ONNX rewrites before the import (``canonicalize``): n-ary ``Sum`` as a chain of ``Add``;
  ``PRelu`` with several slopes as ``Relu`` arithmetic.
- converters used in place of TVM's own during the import (``converters``): ``Clip`` with
  constant bounds as Relax ``maximum``/``minimum`` on a scalar, which the convolutions'
  layout pass carries through (TVM's emits opaque kernels, and a MobileNet's every ReLU6
  then costs two layout transforms).
- Relax rewrites after it (``pairwise_max_min``, ``constant_powers``): ``Max``/``Min`` as
  pairwise ops, not ``stack`` + reduce; ``x ** 0.75`` (an LRN's, as in Inception) and other
  small constant powers as square roots and products, not ``powf`` (a libm call per element
  in wasm, where ``sqrt`` is one instruction on four lanes).

One rewrite is not exact: ``erf`` (a GELU's) becomes TOPI's ``fast_erf`` (``fast_erf``), a
rational approximation within 4.2e-7 of erf everywhere (float32's own rounding of erf is
3e-8), which vectorizes in the product's epilogue, where libm's ``erff`` is a call per
element (with ``dense``'s 8 x 8 tile for its layer, a text encoder ran 0.82-0.86 of its time).
"""
from __future__ import annotations

import contextlib


def _sum_as_adds(n, model) -> list:
    """ONNX ``Sum`` (n-ary, which TVM imports as broadcast_to + stack + sum, a reduction
    nothing fuses with) as a chain of binary ``Add`` (same broadcasting, same result), so a
    residual add and the ReLU after it fuse into the convolution before them."""
    from onnx import helper

    if len(n.input) < 2:
        return [n]
    nodes, acc = [], n.input[0]
    for i, x in enumerate(n.input[1:]):
        out = n.output[0] if i == len(n.input) - 2 else f"{n.output[0]}__wasmforge_sum{i}"
        nodes.append(helper.make_node("Add", [acc, x], [out], name=f"{n.name}__add{i}" if n.name else ""))
        acc = out
    return nodes


def _prelu_as_relus(n, model) -> list:
    """``PRelu(x, slope)`` as ``Relu(x) - slope * Relu(-x)``: the same value, with the slope
    broadcast as ONNX says (TVM's own PRelu takes only a slope of one value per channel).
    Before opset 7 a slope of C values is one per channel (axis 1): it is reshaped to
    ``[C, 1, ...]`` so that broadcasting gives the same."""
    from onnx import helper, numpy_helper, shape_inference

    x, slope = n.input
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    inits = {i.name: i for i in model.graph.initializer}
    if opset < 7 and slope in inits and len(inits[slope].dims) == 1 and inits[slope].dims[0] > 1:
        typed = shape_inference.infer_shapes(model)
        ranks = {v.name: len(v.type.tensor_type.shape.dim)
                 for v in list(typed.graph.input) + list(typed.graph.value_info)}
        if ranks.get(x, 0) > 2:
            w = numpy_helper.to_array(inits[slope])
            per_channel = f"{slope}__wasmforge_per_channel"
            if per_channel not in inits:
                model.graph.initializer.append(
                    numpy_helper.from_array(w.reshape([w.size] + [1] * (ranks[x] - 2)), per_channel))
            slope = per_channel
    t = f"{n.output[0]}__wasmforge_prelu"
    name = (n.name or n.output[0]) + "__prelu"
    return [helper.make_node("Neg", [x], [t + "_neg"], name=name + "_neg"),
            helper.make_node("Relu", [t + "_neg"], [t + "_negpart"], name=name + "_negpart"),
            helper.make_node("Mul", [slope, t + "_negpart"], [t + "_scaled"], name=name + "_scaled"),
            helper.make_node("Relu", [x], [t + "_pos"], name=name + "_pos"),
            helper.make_node("Sub", [t + "_pos", t + "_scaled"], list(n.output), name=name)]


REWRITES = {"Sum": _sum_as_adds, "PRelu": _prelu_as_relus}


def canonicalize(model) -> int:
    """Rewrite the operators in ``REWRITES`` into equivalent ones TVM imports better.
    Returns the number of nodes rewritten."""
    nodes, changed = [], 0
    for n in list(model.graph.node):
        new = REWRITES[n.op_type](n, model) if n.op_type in REWRITES else [n]
        changed += new != [n]
        nodes.extend(new)
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return changed


def _clip_converter():
    """TVM's ``Clip`` converter, except that constant bounds (the ReLU6 of MobileNets) become
    Relax ``maximum``/``minimum`` with a scalar constant. A NaN bound is no bound, as in
    onnxruntime; bounds that are not constants take TVM's own path."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend

    class Clip(onnx_frontend.Clip):
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            x, lo, hi = (list(inputs) + [None, None])[:3]
            bounds = []
            for bound, none in ((lo, -np.inf), (hi, np.inf)):
                if bound is None:
                    bounds.append(none)
                    continue
                if not isinstance(bound, tvm.ir.GenericConst) or bound.value.numpy().size != 1:
                    return super()._impl_v13(bb, inputs, attr, params)
                v = float(bound.value.numpy().reshape(()))
                bounds.append(none if np.isnan(v) else v)
            return cls._bounded(bb, x, *bounds)

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            return cls._bounded(bb, inputs[0], float(attr.get("min", -np.inf)), float(attr.get("max", np.inf)))

        _impl_v11 = _impl_v13

        @staticmethod
        def _bounded(bb, x, lo: float, hi: float):
            dtype = x.ty.dtype
            if lo != -np.inf:
                x = bb.normalize(relax.op.maximum(x, relax.const(lo, dtype)))
            if hi != np.inf:
                x = bb.normalize(relax.op.minimum(x, relax.const(hi, dtype)))
            return x

    return Clip


@contextlib.contextmanager
def converters():
    """TVM's ONNX converters with ours in place (``Clip``), for one import."""
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    ours = {"Clip": _clip_converter()}
    onnx_frontend._get_convert_map = lambda: {**original(), **ours}
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def pairwise_max_min(mod):
    """TVM imports ONNX ``Max`` and ``Min`` as ``stack`` + a reduction along the new axis;
    ``stack`` has no layout rule, so the convolutions' layout pass fails on it. Fold them
    into pairwise ``maximum``/``minimum`` instead (the same values, and elementwise kernels
    that fuse)."""
    import functools

    from tvm import relax

    fold_op = {"relax.max": relax.op.maximum, "relax.min": relax.op.minimum}

    @relax.expr_functor.mutator
    class Pairwise(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            fold = fold_op.get(getattr(call.op, "name", None))
            if fold is None or len(call.args) != 1 or not isinstance(call.args[0], relax.Var):
                return call
            src = self.lookup_binding(call.args[0])
            if not (isinstance(src, relax.Call) and getattr(src.op, "name", "") == "relax.stack"
                    and int(src.attrs.axis) == 0 and isinstance(src.args[0], relax.Tuple)
                    and [int(a) for a in call.attrs.axis or []] == [0] and not call.attrs.keepdims):
                return call
            return functools.reduce(lambda a, b: self.builder_.normalize(fold(a, b)), list(src.args[0].fields))

    mod["main"] = Pairwise().visit_expr(mod["main"])
    return relax.transform.DeadCodeElimination()(mod)


def _power_as_roots(x, exponent: float, emit):
    """``x ** exponent`` with square roots and products, for the exponents ``POWERS`` lists
    (the same values as ``powf`` up to rounding, NaN where it gives NaN); None for others."""
    from tvm import relax

    sqrt = relax.op.sqrt
    if exponent == 1.0:
        return x
    if exponent == 2.0:
        return emit(relax.op.multiply(x, x))
    if exponent == 0.5:
        return emit(sqrt(x))
    if exponent == 0.25:
        return emit(sqrt(emit(sqrt(x))))
    if exponent == 0.75:
        root = emit(sqrt(x))
        return emit(relax.op.multiply(root, emit(sqrt(root))))
    return None


POWERS = (0.25, 0.5, 0.75, 1.0, 2.0)


def constant_powers(mod):
    """``power(x, c)`` with a scalar constant ``c`` in ``POWERS`` as ``_power_as_roots``
    writes it: elementwise kernels that fuse and vectorize, where ``powf`` is a call per
    element (an Inception's LRN spent 5% of the model in it)."""
    import numpy as np
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Powers(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.power" or len(call.args) != 2:
                return call
            c = call.args[1]
            if not isinstance(c, tvm.ir.expr.Constant) or "float" not in str(c.value.dtype):
                return call
            value = np.asarray(c.value.numpy())
            if value.size != 1:
                return call
            x = call.args[0]
            try:
                same = [int(d) for d in call.ty.shape] == [int(d) for d in x.ty.shape]
            except (TypeError, AttributeError):     # a symbolic or unknown shape
                same = False
            if not same:               # (the constant broadcasts x: leave it as it is)
                return call
            out = _power_as_roots(x, float(value.reshape(())),
                                  lambda e: self.builder_.normalize(e))
            return call if out is None else out

    mod["main"] = Powers().visit_expr(mod["main"])
    return relax.transform.DeadCodeElimination()(mod)


def fast_erf(mod):
    """Every ``erf`` as TOPI's ``fast_erf`` (see the module's docstring), an element-wise
    kernel the fusion passes fuse like ``erf``."""
    from tvm import relax, topi

    @relax.expr_functor.mutator
    class FastErf(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.erf" or "float32" not in str(call.args[0].ty):
                return call
            return self.builder_.call_te(topi.fast_erf, call.args[0], primfunc_name_hint="fast_erf")

    fast = FastErf(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            fast.builder_.update_func(gv, fast.visit_expr(func))
    return relax.transform.DeadCodeElimination()(fast.builder_.get())
