"""lintime.ops through Python: values against float64 references (lintime's own reference ops
and plain-PyTorch recurrences written here from the papers' formulas), gradients by gradcheck,
torch.library.opcheck for every registered op, torch.compile(fullgraph=True) over the ops, and
bad input as Python exceptions with one line."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import lintime
from lintime import ops

lt = torch.ops.lintime
f64 = dict(dtype=torch.float64)


def randn(generator, *shape, scale=1.0):
    return torch.randn(*shape, generator=generator, **f64) * scale


def log_gates(generator, *shape):
    return F.logsigmoid(randn(generator, *shape) + 2.0)  # forget gates near 1, as trained models have


# ---------------------------------------------------------------------------------------------
# Plain-PyTorch float64 references, token by token.

def naive_gla(q, k, v, g, scale, state=None, gate_on_value=False):
    """S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ (or S_{t-1} Diag(exp(g_t)) on values); o_t = scale S_tᵀ q_t."""
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[3]
    G = HQ // H
    S = torch.zeros(B, H, K, V, **f64) if state is None else state.clone()
    o = torch.zeros(B, T, HQ, V, **f64)
    for t in range(T):
        decay = g[:, t].exp()
        S = S * (decay.unsqueeze(2) if gate_on_value else decay.unsqueeze(3))
        S = S + k[:, t].unsqueeze(3) * v[:, t].unsqueeze(2)
        o[:, t] = torch.einsum("bhgk,bhkv->bhgv", q[:, t].view(B, H, G, K), S).reshape(B, HQ, V) * scale
    return o, S


def naive_gsa(q, k, v, s, g, scale, hk=None, hv=None):
    """gsa.md §1: two GLA passes joined by a softmax over the M slots."""
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[3], s.shape[3]
    G = HQ // H
    hk = torch.zeros(B, H, K, M, **f64) if hk is None else hk.clone()
    hv = torch.zeros(B, H, M, V, **f64) if hv is None else hv.clone()
    o = torch.zeros(B, T, HQ, V, **f64)
    for t in range(T):
        decay = g[:, t].exp()  # [B, H, M]
        hk = hk * decay.unsqueeze(2) + k[:, t].unsqueeze(3) * s[:, t].unsqueeze(2)
        hv = hv * decay.unsqueeze(3) + s[:, t].unsqueeze(3) * v[:, t].unsqueeze(2)
        scores = torch.einsum("bhgk,bhkm->bhgm", q[:, t].view(B, H, G, K), hk) * scale
        o[:, t] = torch.einsum("bhgm,bhmv->bhgv", scores.softmax(-1), hv).reshape(B, HQ, V)
    return o, hk, hv


def naive_based(q, k, v, scale, use_norm):
    """fla's parallel_based: weights 1 + a + a²/2 with a = scale q_t·k_s over s ≤ t, normalised + 1e-6."""
    a = torch.einsum("bthd,bshd->bhts", q * scale, k)
    weights = (1 + a + a * a / 2).tril()
    o = torch.einsum("bhts,bshv->bthv", weights, v)
    if use_norm:
        o = o / (weights.sum(-1).transpose(1, 2).unsqueeze(-1) + 1e-6)
    return o


def close(a, b, tol=1e-10):
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


# ---------------------------------------------------------------------------------------------
# Values

@pytest.mark.parametrize("heads", [(2, 2), (4, 2)], ids=["mha", "grouped"])
def test_chunk_gsa_equals_the_recurrence_with_states(generator, heads):
    HQ, H = heads
    B, T, K, V, M = 2, 37, 8, 6, 5
    q, k, v = randn(generator, B, T, HQ, K), randn(generator, B, T, H, K), randn(generator, B, T, H, V)
    s, g = randn(generator, B, T, H, M).softmax(-1), log_gates(generator, B, T, H, M)
    hk0, hv0 = randn(generator, B, H, K, M), randn(generator, B, H, M, V)
    o, (hk, hv) = ops.chunk_gsa(q, k, v, s, g, initial_state=(hk0, hv0), output_final_state=True)
    ro, rhk, rhv = naive_gsa(q, k, v, s, g, K ** -0.5, hk0, hv0)
    assert close(o, ro) and close(hk, rhk) and close(hv, rhv)
    o2, state = ops.fused_recurrent_gsa(q, k, v, s, g, scale=0.3)
    assert state is None and close(o2, naive_gsa(q, k, v, s, g, 0.3)[0])


def test_chunk_gsa_without_gates_is_abc_per_sequence(generator):
    B, T, H, K, V, M = 1, 20, 2, 4, 4, 3
    q, k, v = randn(generator, B, T, H, K), randn(generator, B, T, H, K), randn(generator, B, T, H, V)
    logits = randn(generator, B, T, H, M)
    # ABC: z = logcumsumexp(logits), g_t = z_{t-1} - z_t, s_t = exp(logits_t - z_t).
    z = logits.logcumsumexp(1)
    g = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1] - z[:, 1:]], 1)
    o, _ = ops.chunk_gsa(q, k, v, logits)
    assert close(o, naive_gsa(q, k, v, (logits - z).exp(), g, K ** -0.5)[0])
    # Packed sequences: each sequence's gates start afresh (fla's would run across the boundary).
    cu = torch.tensor([0, 8, 20])
    packed, _ = ops.chunk_gsa(q, k, v, logits, cu_seqlens=cu)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        alone, _ = ops.chunk_gsa(q[:, a:b], k[:, a:b], v[:, a:b], logits[:, a:b])
        assert close(packed[:, a:b], alone)


def test_chunk_gsa_varlen_equals_separate_sequences(generator):
    T, H, K, V, M = 50, 2, 4, 4, 3
    q, k, v = randn(generator, 1, T, H, K), randn(generator, 1, T, H, K), randn(generator, 1, T, H, V)
    s, g = randn(generator, 1, T, H, M).softmax(-1), log_gates(generator, 1, T, H, M)
    cu = torch.tensor([0, 13, 14, 50])
    hk0, hv0 = randn(generator, 3, H, K, M), randn(generator, 3, H, M, V)
    o, (hk, hv) = ops.chunk_gsa(q, k, v, s, g, initial_state=(hk0, hv0), output_final_state=True, cu_seqlens=cu)
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        ro, rhk, rhv = naive_gsa(q[:, a:b], k[:, a:b], v[:, a:b], s[:, a:b], g[:, a:b], K ** -0.5,
                                 hk0[n:n + 1], hv0[n:n + 1])
        assert close(o[:, a:b], ro) and close(hk[n:n + 1], rhk) and close(hv[n:n + 1], rhv)


@pytest.mark.parametrize("state_v_first", [False, True])
def test_chunk_gla_equals_the_recurrence(generator, state_v_first):
    B, T, HQ, H, K, V = 2, 33, 4, 2, 6, 5
    q, k, v = randn(generator, B, T, HQ, K), randn(generator, B, T, H, K), randn(generator, B, T, H, V)
    g = log_gates(generator, B, T, H, K)
    h0 = randn(generator, B, H, K, V)
    given = h0.transpose(-1, -2) if state_v_first else h0
    o, ht = ops.chunk_gla(q, k, v, g, initial_state=given, output_final_state=True, state_v_first=state_v_first)
    ro, rh = naive_gla(q, k, v, g, K ** -0.5, h0)
    assert close(o, ro) and close(ht.transpose(-1, -2) if state_v_first else ht, rh)


def test_fused_recurrent_gla_gates_keys_values_or_nothing(generator):
    B, T, H, K, V = 1, 17, 2, 4, 3
    q, k, v = randn(generator, B, T, H, K), randn(generator, B, T, H, K), randn(generator, B, T, H, V)
    gk, gv = log_gates(generator, B, T, H, K), log_gates(generator, B, T, H, V)
    assert close(ops.fused_recurrent_gla(q, k, v, gk=gk)[0], naive_gla(q, k, v, gk, K ** -0.5)[0])
    assert close(ops.fused_recurrent_gla(q, k, v, gv=gv)[0], naive_gla(q, k, v, gv, K ** -0.5, gate_on_value=True)[0])
    assert close(ops.fused_recurrent_gla(q, k, v)[0], naive_gla(q, k, v, torch.zeros_like(gk), K ** -0.5)[0])


@pytest.mark.parametrize("scale,use_norm", [(None, True), (0.7, True), (None, False)])
def test_parallel_based_is_fla_s_formula(generator, scale, use_norm):
    B, T, H, D, V = 2, 30, 2, 4, 5
    q, k, v = randn(generator, B, T, H, D), randn(generator, B, T, H, D), randn(generator, B, T, H, V)
    expected = naive_based(q, k, v, D ** -0.5 if scale is None else scale, use_norm)
    assert close(ops.parallel_based(q, k, v, scale, use_norm), expected)
    assert close(ops.fused_chunk_based(q, k, v, scale, use_norm), expected)


def test_taylor_sliding_window_and_convolution_equal_their_references(generator):
    B, T, H, D, V = 2, 40, 2, 3, 4
    q, k, v = randn(generator, B, T, H, D), randn(generator, B, T, H, D), randn(generator, B, T, H, V)
    S0, z0 = randn(generator, B, H, 1 + D + D * D, V), randn(generator, B, H, 1 + D + D * D).abs() + 1
    o, (S, z) = ops.taylor_linear_attention(q, k, v, initial_state=(S0, z0), output_final_state=True)
    ro, rS, rz = lt.taylor_attention_reference(q, k, v, True, 1e-12, S0, z0, True, None)
    assert close(o, ro) and close(S, rS) and close(z, rz)

    window = 7
    o = ops.sliding_window_attention(q, k, v, window)
    scores = torch.einsum("bthd,bshd->bhts", q, k) * D ** -0.5
    t = torch.arange(T)
    visible = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)
    expected = torch.einsum("bhts,bshv->bthv", scores.masked_fill(~visible, float("-inf")).softmax(-1), v)
    assert close(o, expected)

    C, W = 5, 4
    x, weight, bias = randn(generator, B, T, C), randn(generator, C, 1, W), randn(generator, C)
    state = randn(generator, B, W - 1, C)
    y, final = ops.short_convolution(x, weight, bias, "silu", initial_state=state, output_final_state=True)
    padded = torch.cat([state, x], 1)  # the history before the first token, oldest first
    expected = F.silu(F.conv1d(padded.transpose(1, 2), weight, bias, groups=C).transpose(1, 2))
    assert close(y, expected) and close(final, x[:, -(W - 1):])


# ---------------------------------------------------------------------------------------------
# Gradients

def gradcheck(fn, *inputs):
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradients_of_every_entry_point(generator):
    B, T, HQ, H, K, V, M = 1, 11, 4, 2, 3, 3, 2
    q, k, v = randn(generator, B, T, HQ, K), randn(generator, B, T, H, K), randn(generator, B, T, H, V)
    s, g = randn(generator, B, T, H, M).softmax(-1), log_gates(generator, B, T, H, M)
    hk0, hv0 = randn(generator, B, H, K, M), randn(generator, B, H, M, V)

    def gsa(q, k, v, s, g, hk0, hv0):
        o, (hk, hv) = ops.chunk_gsa(q, k, v, s, g, initial_state=(hk0, hv0), output_final_state=True)
        return o, hk, hv
    gradcheck(gsa, q, k, v, s, g, hk0, hv0)
    gradcheck(lambda q, k, v, s: ops.chunk_gsa(q, k, v, s, cu_seqlens=torch.tensor([0, 4, 11]))[0], q, k, v, s)

    gk, h0 = log_gates(generator, B, T, H, K), randn(generator, B, H, K, V)
    gradcheck(lambda q, k, v, gk, h0: ops.chunk_gla(q, k, v, gk, initial_state=h0, output_final_state=True),
              q, k, v, gk, h0)

    qb, kb = randn(generator, B, T, H, 2), randn(generator, B, T, H, 2)
    gradcheck(lambda q, k, v: ops.parallel_based(q, k, v), qb, kb, v)
    gradcheck(lambda q, k, v: ops.sliding_window_attention(q, k, v, 4), qb, kb, v)
    x, w = randn(generator, B, T, 3), randn(generator, 3, 1, 4)
    gradcheck(lambda x, w: ops.short_convolution(x, w)[0], x, w)


# ---------------------------------------------------------------------------------------------
# opcheck: schema, fake kernels, autograd registration and AOT dispatch of every op

def op_samples(generator):
    """Arguments of each op. cu_seqlens only where the op has an opaque kernel (gsa_chunk, gla_chunk):
    the ops composed of ATen ops read the sequence boundaries on the host, which tracing cannot."""
    B, T, HQ, H, K, V, M, D, W = 1, 6, 4, 2, 3, 3, 2, 2, 3
    q, k, v = randn(generator, B, T, HQ, K), randn(generator, B, T, H, K), randn(generator, B, T, H, V)
    s, g = randn(generator, B, T, H, M).softmax(-1), log_gates(generator, B, T, H, M)
    gk = log_gates(generator, B, T, H, K)
    hk, hv, h = randn(generator, B, H, K, M), randn(generator, B, H, M, V), randn(generator, B, H, K, V)
    cu = torch.tensor([0, 2, 6])
    grad_o = randn(generator, B, T, HQ, V)
    qd, kd, vd = randn(generator, B, T, H, D), randn(generator, B, T, H, D), randn(generator, B, T, H, V)
    E = 1 + D + D * D
    x, weight, bias = randn(generator, B, T, 5), randn(generator, 5, 1, W), randn(generator, 5)
    one = lambda t: t[:, 0]  # noqa: E731  (the one-token form of a [B, T, ...] tensor)
    return {
        "gla_chunk": [(q, k, v, gk, False, 0.5, h, True, None), (q, k, v, gk, False, 0.5, None, False, None)],
        "gla_chunk_bwd": [(q, k, v, gk, False, 0.5, h, None, grad_o, h)],
        "gla_reference": [(q, k, v, gk, False, 0.5, None, True, None)],
        "gla_step": [(one(q), one(k), one(v), one(gk), False, 0.5, h)],
        "gla_step_": [(one(q), one(k), one(v), one(gk), False, 0.5, h.clone())],
        "gsa_chunk": [(q, k, v, s, g, 0.5, hk, hv, True, None), (q[:, :, :2], k, v, s, g, 0.5, None, None, False, cu)],
        "gsa_chunk_bwd": [(q, k, v, s, g, 0.5, hk, hv, None, grad_o, hk, hv)],
        "gsa_chunk_with_internals": [(q, k, v, s, g, 0.5, hk, hv, True, None)],
        "gsa_chunk_internals_layout": [([B, T, HQ, H, K, V, M, B, 0], torch.float32, torch.device("cpu"))],
        "gsa_chunk_bwd_with_internals": [(q, k, v, s, g, 0.5, hk, hv, None, grad_o, None, None, [])],
        "gsa_reference": [(q, k, v, s, g, 0.5, hk, hv, True, None), (q, k, v, s, None, 0.5, None, None, False, None)],
        "abc_gates": [(s, None)],
        "gsa_step": [(one(q), one(k), one(v), one(s), one(g), 0.5, hk, hv)],
        "gsa_step_": [(one(q), one(k), one(v), one(s), one(g), 0.5, hk.clone(), hv.clone())],
        "gsa_step_rows_": [(one(q), one(k), one(v), one(s), one(g), 0.5, torch.cat([hk, hk]), torch.cat([hv, hv]),
                            torch.tensor([1]))],
        "taylor_attention_chunk": [(qd, kd, vd, True, 1e-6, None, None, True, None)],
        "taylor_attention_reference": [(qd, kd, vd, False, 1e-6, None, None, False, None)],
        "taylor_attention_step": [(one(qd), one(kd), one(vd), True, 1e-6, randn(generator, B, H, E, V),
                                   randn(generator, B, H, E).abs() + 1)],
        "taylor_attention_step_": [(one(qd), one(kd), one(vd), True, 1e-6, randn(generator, B, H, E, V),
                                    randn(generator, B, H, E).abs() + 1)],
        "sliding_window_attention": [(qd, kd, vd, 3, 0.5, None)],
        "sliding_window_attention_reference": [(qd, kd, vd, 3, 0.5, None)],
        "sliding_window_cache_from_prefill": [(kd, vd, 4)],
        "sliding_window_attention_step_": [(one(qd), one(kd), one(vd), 4, 0.5, *lt.sliding_window_cache_from_prefill(kd, vd, 4))],
        "short_convolution": [(x, weight, bias, True, None, True, None)],
        "short_convolution_reference": [(x, weight, None, False, randn(generator, B, W - 1, 5), True, None)],
        "short_convolution_step_": [(x[:, 0], weight, bias, True, randn(generator, B, W - 1, 5))],
    }


# Ops with CUDA kernels only (BASED's fused kernels): their samples and opcheck are in test_cuda.py.
CUDA_ONLY_OPS = {"taylor_attention_fused", "taylor_attention_fused_bwd", "sliding_window_attention_fused",
                 "sliding_window_attention_fused_bwd", "short_convolution_fused", "short_convolution_fused_bwd"}


def test_every_registered_op_has_a_sample():
    registered = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("lintime::")}
    assert registered == set(op_samples(torch.Generator().manual_seed(0))) | CUDA_ONLY_OPS


@pytest.mark.parametrize("name", sorted(op_samples(torch.Generator().manual_seed(0))))
def test_opcheck(name, generator):
    for args in op_samples(generator)[name]:
        differentiable = name in ("gla_chunk", "gsa_chunk", "gla_reference", "gsa_reference", "abc_gates",
                                  "taylor_attention_chunk", "taylor_attention_reference", "sliding_window_attention",
                                  "sliding_window_attention_reference", "short_convolution", "short_convolution_reference")
        args = tuple(a.detach().requires_grad_(differentiable and a.is_floating_point())
                     if isinstance(a, torch.Tensor) and not name.endswith("_") else a for a in args)
        torch.library.opcheck(getattr(lt, name).default, args)


# ---------------------------------------------------------------------------------------------
# torch.compile

class TinyMixer(torch.nn.Module):
    """One module calling every fla-named op, to trace as one graph."""

    def __init__(self, d=8, heads=2, slots=3):
        super().__init__()
        self.heads, self.slots = heads, slots
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.slot = torch.nn.Linear(d, heads * slots)
        self.conv = torch.nn.Parameter(torch.randn(d, 1, 4) * 0.3)

    def forward(self, x):
        B, T, d = x.shape
        x, _ = ops.short_convolution(x, self.conv)
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).unbind(2)
        s = self.slot(x).view(B, T, self.heads, self.slots)
        o1, _ = ops.chunk_gsa(q, k, v, s.softmax(-1), F.logsigmoid(s))
        o2, _ = ops.chunk_gla(q, k, v, F.logsigmoid(k))
        o3 = ops.parallel_based(q, k, v)
        o4 = ops.sliding_window_attention(q, k, v, 3)
        return (o1 + o2 + o3 + o4).reshape(B, T, d)


def test_torch_compile_fullgraph_traces_the_ops(generator):
    torch.manual_seed(0)
    model = TinyMixer().double()
    x = randn(generator, 2, 9, 8)
    eager = model(x)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.square().sum().backward()
    assert close(out, eager)
    for p, expected in zip(model.parameters(), eager_grads):
        assert close(p.grad, expected)


# ---------------------------------------------------------------------------------------------
# Bad input

def one_line(error):
    return str(error).strip().splitlines()[0]


def test_bad_input_raises_python_exceptions_with_one_line(generator):
    q = randn(generator, 1, 5, 2, 4)
    with pytest.raises(RuntimeError) as error:
        ops.chunk_gsa(q, q, q[..., :3], randn(generator, 1, 5, 3, 2))
    assert "lintime::gsa_chunk: s must have shape" in one_line(error.value)
    with pytest.raises(RuntimeError) as error:
        ops.chunk_gla(q, q, q, q, cu_seqlens=torch.tensor([0, 9]))
    assert "cu_seqlens" in one_line(error.value)
    with pytest.raises(ValueError, match="reverse=True is not supported"):
        ops.fused_recurrent_gla(q, q, q, reverse=True)
    with pytest.raises(ValueError, match="gk and gv together"):
        ops.fused_recurrent_gla(q, q, q, gk=q, gv=q)
    with pytest.raises(ValueError, match="initial_state must be a pair"):
        ops.chunk_gsa(q, q, q, q, initial_state=q)
    with pytest.raises(ValueError, match="window must be an int"):
        ops.sliding_window_attention(q, q, q, 0)
    with pytest.raises(ValueError, match="activation must be"):
        ops.short_convolution(q[:, :, 0], torch.ones(2, 1, 3), activation="gelu")


def test_load_model_runs_a_folder_and_refuses_bad_ones(tmp_path):
    folder = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fla_parity", "gsa")
    model = lintime.load_model(folder, dtype=torch.float64)
    ids = torch.randint(0, model.vocab_size, (2, 7), generator=torch.Generator().manual_seed(3))
    logits = model(ids)
    assert logits.shape == (2, 7, model.config["vocab_size"]) and logits.dtype == torch.float64
    # Prefill then decode equals the forward, and greedy generate follows the argmax.
    last = model.prefill(ids[:, :4], 7)
    steps = [last] + [model.step(ids[:, t]) for t in range(4, 7)]
    assert close(torch.stack(steps, 1), logits[:, 3:])
    generated = model.generate(ids[:1], max_new_tokens=3)
    assert generated[0][0] == logits[0, -1].argmax().item()
    assert "model.embeddings.weight" in model.weights()
    with pytest.raises(RuntimeError, match="no config.json"):
        lintime.load_model(tmp_path)
    with pytest.raises(ValueError, match="input_ids: expected an int64 tensor"):
        model(ids.float())
    with pytest.raises(ValueError, match="dtype must be one of"):
        lintime.load_model(folder, dtype=torch.int32)


def test_a_library_built_for_another_torch_is_refused(tmp_path):
    package = os.path.dirname(lintime.__file__)
    copy = tmp_path / "lintime"
    shutil.copytree(package, copy)
    (copy / "_build_info.py").write_text('TORCH_VERSION = "1.0.0"\nCUDA_ARCHITECTURES = ""\n')
    result = subprocess.run([sys.executable, "-c", "import lintime"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert f"lintime was built for torch 1.0.0 but this process has torch {torch.__version__}" in result.stderr
