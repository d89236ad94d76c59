"""How the relax_build stage lowers softmax: with a polynomial exp.

WebAssembly has no exp instruction: TVM's ``T.exp`` becomes a call of wasi-libc's scalar
``expf`` per element, and a text encoder's attention softmax (4 heads of 128 x 128) spent
most of its time there. ``topi.fast_exp`` computes exp as a power of two (a shift into the
exponent bits) times a degree-5 polynomial: a few multiply-adds, which the default schedule
(``spatial``) vectorizes with the other element-wise loops of the kernel. Its relative error
is about 1.1e-6 on [-30, 0] (``expf``: about 1e-7), where softmax evaluates it (the
row's maximum is subtracted first).

Pure function ``softmax`` (the TE compute) and ``legalize``, the LegalizeOps entry."""
from __future__ import annotations

OP = "relax.nn.softmax"


def softmax(x, axis: int):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``, exp by ``topi.fast_exp``."""
    from tvm import topi

    shifted = topi.subtract(x, topi.max(x, axis=axis, keepdims=True))
    e = topi.fast_exp(shifted)
    return topi.divide(e, topi.sum(e, axis=axis, keepdims=True))


def legalize(bb, call):
    """float32 softmax with ``softmax``; anything else as TVM does."""
    import tvm

    if call.args[0].ty.dtype != "float32":
        return tvm.ir.Op.get(OP).get_attr("FLegalize")(bb, call)
    return bb.call_te(softmax, call.args[0], int(call.attrs.axis), primfunc_name_hint="softmax")
