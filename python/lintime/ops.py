"""fla's functional API over lintime's kernels: the names, argument order, defaults, layouts
([B, T, H, ·]) and return conventions of fla (flash-linear-attention at commit bc3b101), so that
`from fla.ops.gsa import chunk_gsa` becomes `from lintime.ops import chunk_gsa`. Gradients come
from lintime's registered C++ backward (analytic for GSA and GLA; autograd through ATen for the
BASED ops and the convolution); every op also runs under torch.compile (lintime/_fake.py).

Where lintime differs from fla:
  * Grouped heads: q may have HQ = G·H heads over k, v (and s, g) with H heads; lintime keeps one
    recurrent state per key/value head, [N, H, ...], and never repeats k and v (fla's chunk_gsa
    accepts grouped q too; fla's GLA layers repeat k and v instead).
  * States are float32 (float64 for float64 inputs), whatever the dtype of q: initial states are
    cast to it and final states returned in it.
  * ABC (chunk_gsa with g=None) forms its gates per sequence when cu_seqlens is given; fla forms
    them over the packed batch, letting one sequence's slot logits reach the next.
  * fused_recurrent_* compute the same recurrence as chunk_* (through lintime's chunked kernels);
    `reverse=True`, and GLA with both gk and gv, are not supported and raise ValueError.
  * parallel_based / fused_chunk_based compute in float32 with the exact normaliser 1e-6 of fla
    and do not limit the feature dimension (fla: 128 and 16).
"""
import torch

_lintime = torch.ops.lintime


def _default_scale(scale, q):
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


def _check(condition, message):
    if not condition:
        raise ValueError(message)


def _state_pair(initial_state, what):
    if initial_state is None:
        return None, None
    _check(isinstance(initial_state, (tuple, list)) and len(initial_state) == 2,
           f"{what}: initial_state must be a pair (hk [N, H, K, M], hv [N, H, M, V]), got {type(initial_state).__name__}")
    return initial_state[0], initial_state[1]


# ---------------------------------------------------------------------------------------------
# Gated slot attention

def chunk_gsa(q, k, v, s, g=None, scale=None, initial_state=None, output_final_state=False, checkpoint_level=2,
              cu_seqlens=None, cu_seqlens_cpu=None, **kwargs):
    """GSA (gsa.md §1): o = GLA(softmax(GLA(q, k, s; g)), s, v; g), M memory slots.

    q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V], s [B, T, H, M] (slot writes), g [B, T, H, M]
    (log forget gates; None: ABC, with s the raw slot logits), scale (default K^-0.5),
    initial_state (hk [N, H, K, M], hv [N, H, M, V]), cu_seqlens [N + 1] with B = 1.
    Returns (o [B, T, HQ, V], (hk, hv) or None). checkpoint_level is accepted for fla's callers:
    lintime's backward keeps what its kernels need and recomputes the rest."""
    hk0, hv0 = _state_pair(initial_state, "chunk_gsa")
    if g is None:
        s, g = _lintime.abc_gates(s, cu_seqlens)
    o, hk, hv = _lintime.gsa_chunk(q, k, v, s, g, _default_scale(scale, q), hk0, hv0, bool(output_final_state),
                                   cu_seqlens)
    return o, ((hk, hv) if output_final_state else None)


def fused_recurrent_gsa(q, k, v, s, g=None, scale=None, initial_state=None, output_final_state=False,
                        reverse=False, cu_seqlens=None):
    """fla's token-by-token GSA entry point; the same recurrence as chunk_gsa (returns the same)."""
    _check(not reverse, "fused_recurrent_gsa: reverse=True is not supported by lintime")
    return chunk_gsa(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens=cu_seqlens)


# ---------------------------------------------------------------------------------------------
# Gated linear attention

def _state_in(state, v_first):
    return state.transpose(-1, -2) if state is not None and v_first else state


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, state_v_first=False,
              cu_seqlens=None, cu_seqlens_cpu=None):
    """GLA: S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

    q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V], g [B, T, H, K] (log forget gates), state
    [N, H, K, V] ([N, H, V, K] with state_v_first). Returns (o [B, T, HQ, V], final state or None)."""
    o, final_state = _lintime.gla_chunk(q, k, v, g, False, _default_scale(scale, q),
                                        _state_in(initial_state, state_v_first), bool(output_final_state), cu_seqlens)
    if not output_final_state:
        return o, None
    return o, _state_in(final_state, state_v_first)


def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None, output_final_state=False,
                        reverse=False, state_v_first=False, cu_seqlens=None, **kwargs):
    """GLA with key gates gk [B, T, H, K] or value gates gv [B, T, H, V] (S_t = S_{t-1} Diag(exp(gv_t))
    + k_t v_tᵀ); neither: plain causal linear attention. Returns (o, final state or None)."""
    _check(not reverse, "fused_recurrent_gla: reverse=True is not supported by lintime")
    _check(gk is None or gv is None, "fused_recurrent_gla: gk and gv together are not supported by lintime; "
                                     "expected one of them or neither")
    gate_on_value = gv is not None
    gate = gv if gate_on_value else gk
    if gate is None:
        gate = k.new_zeros(k.shape)
    o, final_state = _lintime.gla_chunk(q, k, v, gate, gate_on_value, _default_scale(scale, q),
                                        _state_in(initial_state, state_v_first), bool(output_final_state), cu_seqlens)
    if not output_final_state:
        return o, None
    return o, _state_in(final_state, state_v_first)


# ---------------------------------------------------------------------------------------------
# BASED

def _taylor_query(q, scale):
    # lintime's Taylor map gives 1 + s + s²/2 with s = q·k / √D; fla's form has s = scale · q·k.
    # Both are functions of q·k alone, so scaling q by scale·√D turns one into the other (the
    # default scale D^-½ needs none: D^-½·√D is not exactly 1 in floating point).
    if scale is None:
        return q
    return q * (float(scale) * q.shape[-1] ** 0.5)


def parallel_based(q, k, v, scale=None, use_norm=True, **kwargs):
    """BASED's Taylor linear attention as fla computes it: o_t = Σ_{s≤t} (1 + a + a²/2) v_s with
    a = scale · q_t·k_s (scale default D^-0.5), divided by (Σ_{s≤t} (1 + a + a²/2) + 1e-6) when
    use_norm. q, k [B, T, H, D], v [B, T, H, V]. Returns o only (fla's convention)."""
    _check("head_first" not in kwargs, "parallel_based: head_first has been removed (as in fla); pass [B, T, H, ...]")
    o, _, _ = _lintime.taylor_attention_chunk(_taylor_query(q, scale), k, v, bool(use_norm), 1e-6, None, None,
                                              False, None)
    return o  # in q's dtype already (the op's convention)


def fused_chunk_based(q, k, v, scale=None, use_norm=True, **kwargs):
    """The same as parallel_based (fla's chunked form of the same attention)."""
    _check("head_first" not in kwargs, "fused_chunk_based: head_first has been removed (as in fla); pass [B, T, H, ...]")
    return parallel_based(q, k, v, scale, use_norm)


def taylor_linear_attention(q, k, v, normalize=True, eps=1e-12, initial_state=None, output_final_state=False,
                            cu_seqlens=None):
    """lintime's Taylor linear attention (BASED's global mixer, based.md §1) with states:
    φ(x) = [1, x / D^¼, vec(x⊗x) / (√2·√D)]; S_t = S_{t-1} + φ(k_t) v_tᵀ, z_t = z_{t-1} + φ(k_t);
    o_t = φ(q_t)ᵀ S_t / (φ(q_t)·z_t + eps) (normalize) or φ(q_t)ᵀ S_t.
    q, k [B, T, H, D], v [B, T, H, V]; initial_state (S [N, H, E, V], z [N, H, E]), E = 1 + D + D².
    Returns (o, (S, z) or None)."""
    S0, z0 = (None, None) if initial_state is None else initial_state
    o, S, z = _lintime.taylor_attention_chunk(q, k, v, bool(normalize), float(eps), S0, z0, bool(output_final_state),
                                              cu_seqlens)
    return o, ((S, z) if output_final_state else None)


def sliding_window_attention(q, k, v, window, scale=None, cu_seqlens=None):
    """Causal softmax attention over the last `window` keys, itself included (BASED's local mixer;
    FlashAttention's window_size=(window - 1, 0)). q, k [B, T, H, D], v [B, T, H, V]; scale
    default D^-0.5. Returns o [B, T, H, V]."""
    _check(isinstance(window, int) and window >= 1, f"sliding_window_attention: window must be an int >= 1, got {window!r}")
    return _lintime.sliding_window_attention(q, k, v, window, _default_scale(scale, q), cu_seqlens)


# ---------------------------------------------------------------------------------------------
# Short convolution

_ACTIVATIONS = {None: False, "silu": True, "swish": True}


def short_convolution(x, weight, bias=None, activation="silu", initial_state=None, output_final_state=False,
                      cu_seqlens=None):
    """Causal depthwise convolution (fla's ShortConvolution, BASED's BaseConv): y_t = act(b + Σ_j
    w[:, j] ⊙ x_{t-W+1+j}). x [B, T, D], weight [D, 1, W] (or [D, W]), bias [D] or None,
    activation "silu"/"swish" or None, state [N, W - 1, D] (the last W - 1 inputs, oldest first).
    Returns (y [B, T, D], final state or None)."""
    _check(activation in _ACTIVATIONS, f"short_convolution: activation must be 'silu', 'swish' or None, got {activation!r}")
    if weight.dim() == 2:
        weight = weight.unsqueeze(1)
    y, final_state = _lintime.short_convolution(x, weight, bias, _ACTIVATIONS[activation], initial_state,
                                                bool(output_final_state), cu_seqlens)
    return y, (final_state if output_final_state else None)


__all__ = ["chunk_gsa", "fused_recurrent_gsa", "chunk_gla", "fused_recurrent_gla", "parallel_based",
           "fused_chunk_based", "taylor_linear_attention", "sliding_window_attention", "short_convolution"]
