"""Batch normalization at inference, folded at build time.

At inference, ``batch_norm(x, gamma, beta, mean, var)`` along channel axis ``c`` is
``x * s + t`` with, per channel, ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``
(``scale_shift``). After a convolution whose weights are constants, ``s`` goes into the
weights, each output channel's filter times its ``s`` (``folded_weights``), and only ``t``
is left: a bias, which the convolution's kernel adds in its epilogue. onnxruntime folds the
same way.

Without this pass, TVM's ``DecomposeOpsForInference`` leaves
``(x - mean) / sqrt(var + eps) * gamma + beta``: a subtraction, a division, a multiplication
and an addition on every output value, and four constant vectors per block of channels for
the kernel to keep in registers or reload.
"""
from __future__ import annotations

import numpy as np

BATCH_NORM, CONV2D = "relax.nn.batch_norm", "relax.nn.conv2d"


def scale_shift(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, (s, t) with ``batch_norm(x) == x * s + t``: computed in float64, kept as
    float32."""
    g, b, m, v = (np.asarray(a, dtype=np.float64) for a in (gamma, beta, mean, var))
    s = g / np.sqrt(v + eps)
    return s.astype(np.float32), (b - m * s).astype(np.float32)


def folded_weights(weight_oihw, s) -> np.ndarray:
    """OIHW convolution weights with output channel ``o``'s filter times ``s[o]``."""
    w = np.asarray(weight_oihw)
    return (w.astype(np.float64) * np.asarray(s, dtype=np.float64).reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)


def along_axis(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``values`` (one per channel) shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _foldable_conv(conv, axis: int) -> bool:
    """A 2-D convolution in NCHW/OIHW with constant float32 weights, normalized along its
    channels."""
    from tvm import relax
    from tvm.ir.expr import GenericConst

    if not (isinstance(conv, relax.Call) and getattr(conv.op, "name", None) == CONV2D and axis == 1):
        return False
    a = conv.attrs
    return (isinstance(conv.args[1], GenericConst) and a.data_layout == "NCHW" and a.kernel_layout == "OIHW"
            and a.out_layout in ("", "NCHW") and conv.args[1].value.dtype == "float32")


def fold_batch_norm():
    """A module pass: every inference ``batch_norm`` with constant parameters becomes
    ``x * s + t``, or, right after a convolution used by nothing else, that convolution with
    folded weights plus ``t``. Its ``scale = False`` and ``center = False`` leave out gamma
    and beta; a ``training`` one (batch statistics) is left as it is."""
    import tvm
    from tvm import relax
    from tvm.ir.expr import GenericConst

    @relax.expr_functor.mutator
    class Fold(relax.PyExprMutator):
        def __init__(self, mod, uses: dict):
            super().__init__(mod)
            self.uses = uses

        def _bound(self, expr):
            return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

        def visit_tuple_getitem_(self, op):
            bn = self._bound(op.tuple_value)
            # (a training batch norm uses its batch's statistics: no constant scale and shift)
            if not (op.index == 0 and isinstance(bn, relax.Call) and getattr(bn.op, "name", None) == BATCH_NORM
                    and all(isinstance(a, GenericConst) and a.value.dtype == "float32" for a in bn.args[1:])
                    and not bn.attrs.training):
                return super().visit_tuple_getitem_(op)
            x, axis = bn.args[0], int(bn.attrs.axis)
            gamma, beta, mean, var = (a.value.numpy() for a in bn.args[1:])
            s, t = scale_shift(gamma if bn.attrs.scale else np.ones_like(gamma),
                               beta if bn.attrs.center else np.zeros_like(beta), mean, var, float(bn.attrs.epsilon))
            conv = self._bound(x)
            if _foldable_conv(conv, axis) and self.uses.get(x, 0) == 1:
                w = relax.const(folded_weights(conv.args[1].value.numpy(), s))
                out = relax.Call(conv.op, [self.visit_expr(conv.args[0]), w], conv.attrs)
                return relax.op.add(out, relax.const(along_axis(t, 4, 1)))
            ndim = len(x.ty.shape)
            axis %= ndim
            return relax.op.add(relax.op.multiply(self.visit_expr(x), relax.const(along_axis(s, ndim, axis))),
                                relax.const(along_axis(t, ndim, axis)))

    def uses(f) -> dict:
        """How many bindings of its dataflow block read each variable."""
        count = {}
        for block in f.body.blocks:
            if isinstance(block, relax.DataflowBlock):
                count.update({var: len(users) for var, users in relax.analysis.udchain(block).items()})
        return count

    @tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
    def run(mod, ctx):
        for gv, f in list(mod.functions.items()):
            if isinstance(f, relax.Function):
                mod[gv] = Fold(mod, uses(f)).visit_expr(f)
        return mod

    return run
