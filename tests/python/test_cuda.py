"""The Python package on a GPU (skipped without one): opcheck of every registered op on CUDA
tensors (the fused kernels' shapes as well as the tiny samples), torch.compile over the ops on
CUDA (aot_eager and inductor) equal to eager in values and gradients, and the fla-named ops on
CUDA against the float64 CPU references."""
import pytest
import torch
import torch.nn.functional as F

from lintime import ops
from test_ops import CUDA_ONLY_OPS, TinyMixer, op_samples

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
lt = torch.ops.lintime
DIFFERENTIABLE = ("gla_chunk", "gsa_chunk", "gla_reference", "gsa_reference", "abc_gates", "taylor_attention_chunk",
                  "taylor_attention_reference", "sliding_window_attention", "sliding_window_attention_reference",
                  "short_convolution", "short_convolution_reference")


def to_cuda(value, dtype=torch.float32):
    if isinstance(value, torch.Tensor):
        return value.to("cuda", dtype=dtype if value.is_floating_point() else value.dtype)
    return value


def fused_shape_samples(generator):
    """gsa_chunk and its internals at a shape the fused kernels take (64-token chunks, 64 slots)."""
    B, T, H, K, V, M = 2, 130, 2, 32, 32, 16
    r = lambda *s: torch.randn(*s, generator=generator, dtype=torch.float64)  # noqa: E731
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
    s, g = r(B, T, H, M).softmax(-1), F.logsigmoid(r(B, T, H, M) + 2)
    hk, hv = r(B, H, K, M), r(B, H, M, V)
    return {"gsa_chunk": [(q, k, v, s, g, K ** -0.5, hk, hv, True, None)],
            "gsa_chunk_with_internals": [(q, k, v, s, g, K ** -0.5, hk, hv, True, None)],
            "gla_chunk": [(q, k, v, F.logsigmoid(r(B, T, H, K) + 2), False, K ** -0.5, None, True, None)]}


def cuda_only_samples(generator):
    """BASED's fused kernels as ops, in bf16 at shapes they take; the backward ops get their
    forward's outputs."""
    r = lambda *s: torch.randn(*s, generator=generator).to("cuda", torch.bfloat16)  # noqa: E731
    B, T, H = 2, 80, 2
    qt, kt, vt = r(B, T, H, 16), r(B, T, H, 16), r(B, T, H, 64)
    q, k, v = r(B, T, H, 64), r(B, T, H, 64), r(B, T, H, 64)
    x, w, b = r(B, T, 32), r(32, 1, 4), r(32)
    o_t = lt.taylor_attention_fused(qt, kt, vt, True, 1e-6, False)[0]
    o_w, lse = lt.sliding_window_attention_fused(q, k, v, 8, 0.125, True)
    return {"taylor_attention_fused": [(qt, kt, vt, True, 1e-6, False), (qt, kt, vt, False, 1e-6, True)],
            "taylor_attention_fused_bwd": [(qt, kt, vt, o_t, r(B, T, H, 64), True, 1e-6)],
            "sliding_window_attention_fused": [(q, k, v, 8, 0.125, True), (q, k, v, 8, 0.125, False)],
            "sliding_window_attention_fused_bwd": [(q, k, v, o_w, lse, r(B, T, H, 64), 8, 0.125)],
            "short_convolution_fused": [(x, w, b, True, None, True), (x, w, None, False, r(B, 3, 32), False)],
            "short_convolution_fused_bwd": [(x, w, b, True, r(B, T, 32)), (x, w, None, False, r(B, T, 32))]}


def test_every_cuda_only_op_has_a_sample(generator):
    assert set(cuda_only_samples(generator)) == CUDA_ONLY_OPS


@pytest.mark.parametrize("sizes", ["tiny", "fused", "fused_bf16", "cuda_only"])
@pytest.mark.parametrize("name", sorted(op_samples(torch.Generator().manual_seed(0))) + sorted(CUDA_ONLY_OPS))
def test_opcheck_on_cuda(name, sizes, generator):
    dtype = torch.bfloat16 if sizes == "fused_bf16" else torch.float32
    samples = {"tiny": op_samples, "fused": fused_shape_samples, "fused_bf16": fused_shape_samples,
               "cuda_only": cuda_only_samples}[sizes](generator)
    if name not in samples:
        pytest.skip(f"no {sizes} sample")
    for args in samples[name]:
        args = tuple(to_cuda(a, a.dtype if sizes == "cuda_only" else dtype) if isinstance(a, torch.Tensor) else a
                     for a in args)
        args = tuple(a.detach().requires_grad_(name in DIFFERENTIABLE and a.is_floating_point())
                     if isinstance(a, torch.Tensor) and not name.endswith("_") else a for a in args)
        torch.library.opcheck(getattr(lt, name).default, args)


class GsaLayerLike(torch.nn.Module):
    """GSA at a shape the fused kernels take, as fla's layer calls it."""

    def __init__(self, d=128, heads=2, slots=64):
        super().__init__()
        self.heads, self.slots = heads, slots
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.slot = torch.nn.Linear(d, heads * slots)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).unbind(2)
        f = F.logsigmoid(self.slot(x).view(B, T, self.heads, self.slots)) / 8
        o, _ = ops.chunk_gsa(F.silu(q), F.silu(k), F.silu(v), 1 - f.exp(), f)
        return o.reshape(B, T, d)


class BasedLayerLike(torch.nn.Module):
    """BASED's three fused kernels in bf16 (Taylor feature dim 16, window heads of 64, short
    convolution), each where its kernel takes it."""

    def __init__(self, d=128):
        super().__init__()
        self.proj = torch.nn.Linear(d, 2 * 32 + d + 3 * d)
        self.conv = torch.nn.Parameter(torch.randn(d, 1, 4) * 0.3)

    def forward(self, x):
        B, T, d = x.shape
        x, _ = ops.short_convolution(x, self.conv.to(x.dtype))
        qt, kt, vt, qw, kw, vw = self.proj(x).split([32, 32, d, d, d, d], -1)
        o1 = ops.parallel_based(qt.view(B, T, 2, 16), kt.view(B, T, 2, 16), vt.view(B, T, 2, 64))
        o2 = ops.sliding_window_attention(qw.view(B, T, 2, 64), kw.view(B, T, 2, 64), vw.view(B, T, 2, 64), 16)
        return o1.reshape(B, T, d) + o2.reshape(B, T, d)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("module", ["tiny_mixer", "gsa_fused", "based_bf16"])
def test_torch_compile_on_cuda_equals_eager(backend, module):
    torch.manual_seed(0)
    build = {"tiny_mixer": (TinyMixer, (2, 9, 8)), "gsa_fused": (GsaLayerLike, (2, 300, 128)),
             "based_bf16": (BasedLayerLike, (2, 200, 128))}
    make, shape = build[module]
    dtype = torch.bfloat16 if module == "based_bf16" else torch.float32
    model = make().to("cuda", dtype)
    x = torch.randn(*shape, device="cuda", dtype=dtype)
    eager = model(x)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out = compiled(x)
    out.square().sum().backward()
    # The same kernels run in both; inductor may fuse the surrounding ATen ops differently
    # (reassociation): a few roundings of the dtype.
    tol = 1e-4 if dtype == torch.float32 else 4 * 2 ** -8
    assert (out - eager).norm() <= tol * eager.norm()
    for p, expected in zip(model.parameters(), eager_grads):
        assert (p.grad - expected).norm() <= tol * expected.norm()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_gsa_on_cuda_equals_the_float64_reference(dtype, generator):
    B, T, H, K, M = 2, 200, 2, 64, 64
    r = lambda *s: torch.randn(*s, generator=generator, dtype=torch.float64)  # noqa: E731
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, K)
    f = F.logsigmoid(r(B, T, H, M)) / 8
    s = 1 - f.exp()
    expected, (ek, ev) = ops.chunk_gsa(q, k, v, s, f, output_final_state=True)
    cast = lambda t: t.to("cuda", dtype)  # noqa: E731
    out, (hk, hv) = ops.chunk_gsa(cast(q), cast(k), cast(v), cast(s), f.to("cuda"), output_final_state=True)
    unit = torch.finfo(dtype).eps / 2
    bound = 64 * unit if dtype == torch.float32 else 8 * unit  # fp32: T-long sums of exp products; bf16: rounding of o
    for got, want in ((out, expected), (hk, ek), (hv, ev)):
        err = (got.double().cpu() - want).norm() / want.norm()
        assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
