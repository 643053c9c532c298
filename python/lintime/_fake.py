"""Shape functions ("fake" kernels) of lintime's ops whose kernels are opaque to PyTorch, so that
torch.compile and torch.export trace code that calls them. The ops composed of ATen ops
(CompositeImplicitAutograd: the references, abc_gates, taylor_attention_chunk, short_convolution,
sliding_window_attention) need none: tracing sees through them. Output rules (schemas.cpp and the
op headers): o in q's dtype; recurrent states in the compute dtype, float64 when any input is
float64 and float32 otherwise; a final state that was not requested is None."""
import torch
from torch.library import register_fake


def _compute_dtype(*tensors):
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _sequences(q, cu_seqlens):
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


@register_fake("lintime::gla_chunk")
def _gla_chunk(q, k, v, g, gate_on_value, scale, initial_state, output_final_state, cu_seqlens):
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[3]
    o = q.new_empty((B, T, HQ, V))
    if not output_final_state:
        return o, None
    return o, q.new_empty((_sequences(q, cu_seqlens), H, K, V), dtype=_compute_dtype(q, k, v, g))


@register_fake("lintime::gla_chunk_bwd")
def _gla_chunk_bwd(q, k, v, g, gate_on_value, scale, initial_state, cu_seqlens, grad_o, grad_final_state):
    grad_initial_state = None if initial_state is None else torch.empty_like(initial_state)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(g), grad_initial_state)


@register_fake("lintime::gla_step")
def _gla_step(q, k, v, g, gate_on_value, scale, state):
    o = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    return o, state.new_empty(state.shape, dtype=_compute_dtype(q, k, v, g))


@register_fake("lintime::gla_step_")
def _gla_step_inplace(q, k, v, g, gate_on_value, scale, state):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


def _gsa_outputs(q, k, v, s, g, cu_seqlens, output_final_state):
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[3], s.shape[3]
    o = q.new_empty((B, T, HQ, V))
    if not output_final_state:
        return o, None, None
    N, dtype = _sequences(q, cu_seqlens), _compute_dtype(q, k, v, s, g)
    return o, q.new_empty((N, H, K, M), dtype=dtype), q.new_empty((N, H, M, V), dtype=dtype)


@register_fake("lintime::gsa_chunk")
def _gsa_chunk(q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state, cu_seqlens):
    return _gsa_outputs(q, k, v, s, g, cu_seqlens, output_final_state)


# The fused CUDA kernels return internals that their backward takes; their shapes come from the
# same C++ list the kernels allocate from (lintime::gsa_chunk_internals_layout), none off the GPU.
def _kept_internals(q, k, v, s, cu_seqlens):
    B, T, HQ, K = q.shape
    sizes = [B, T, HQ, k.shape[2], K, v.shape[3], s.shape[3], _sequences(q, cu_seqlens), int(cu_seqlens is not None)]
    layout = torch.ops.lintime.gsa_chunk_internals_layout([int(n) for n in sizes], q.dtype, q.device)
    internals, i = [], 0
    while i < len(layout):
        ndim = layout[i]
        shape, fp32 = layout[i + 1:i + 1 + ndim], layout[i + 1 + ndim] == 0
        internals.append(q.new_empty(shape, dtype=torch.float32 if fp32 else q.dtype))
        i += ndim + 2
    return internals


@register_fake("lintime::gsa_chunk_with_internals")
def _gsa_chunk_with_internals(q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state,
                              cu_seqlens):
    return (*_gsa_outputs(q, k, v, s, g, cu_seqlens, output_final_state), _kept_internals(q, k, v, s, cu_seqlens))


def _gsa_grads(q, k, v, s, g, initial_state_k, initial_state_v):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(s), torch.empty_like(g),
            None if initial_state_k is None else torch.empty_like(initial_state_k),
            None if initial_state_v is None else torch.empty_like(initial_state_v))


@register_fake("lintime::gsa_chunk_bwd")
def _gsa_chunk_bwd(q, k, v, s, g, scale, initial_state_k, initial_state_v, cu_seqlens, grad_o, grad_final_state_k,
                   grad_final_state_v):
    return _gsa_grads(q, k, v, s, g, initial_state_k, initial_state_v)


@register_fake("lintime::gsa_chunk_bwd_with_internals")
def _gsa_chunk_bwd_with_internals(q, k, v, s, g, scale, initial_state_k, initial_state_v, cu_seqlens, grad_o,
                                  grad_final_state_k, grad_final_state_v, internals):
    return _gsa_grads(q, k, v, s, g, initial_state_k, initial_state_v)


@register_fake("lintime::gsa_step")
def _gsa_step(q, k, v, s, g, scale, state_k, state_v):
    dtype = _compute_dtype(q)  # gsa_step.cpp: the states' precision follows q
    o = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    return o, state_k.new_empty(state_k.shape, dtype=dtype), state_v.new_empty(state_v.shape, dtype=dtype)


@register_fake("lintime::gsa_step_")
def _gsa_step_inplace(q, k, v, s, g, scale, state_k, state_v):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@register_fake("lintime::gsa_step_rows_")
def _gsa_step_rows_inplace(q, k, v, s, g, scale, state_k, state_v, rows):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@register_fake("lintime::taylor_attention_step_")
def _taylor_attention_step_inplace(q, k, v, normalize, eps, state, normalizer):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@register_fake("lintime::sliding_window_cache_from_prefill")
def _sliding_window_cache_from_prefill(k, v, window):
    B, _, H, D = k.shape
    return (k.new_empty((B, H, window, D)), v.new_empty((B, H, window, v.shape[3])),
            k.new_empty((B,), dtype=torch.int64))


@register_fake("lintime::sliding_window_attention_step_")
def _sliding_window_attention_step_inplace(q, k, v, window, scale, key_cache, value_cache, positions):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@register_fake("lintime::short_convolution_step_")
def _short_convolution_step_inplace(x, weight, bias, silu, state):
    return torch.empty_like(x)


# BASED's fused CUDA kernels as ops (CUDA kernels only; the composites call them where they apply).
@register_fake("lintime::taylor_attention_fused")
def _taylor_attention_fused(q, k, v, normalize, eps, output_final_state):
    o = torch.empty_like(v)
    if not output_final_state:
        return o, None, None
    B, _, H, D = q.shape
    features = 1 + D + D * D
    return (o, q.new_empty((B, H, features, v.shape[3]), dtype=torch.float32),
            q.new_empty((B, H, features), dtype=torch.float32))


@register_fake("lintime::taylor_attention_fused_bwd")
def _taylor_attention_fused_bwd(q, k, v, o, grad_o, normalize, eps):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@register_fake("lintime::sliding_window_attention_fused")
def _sliding_window_attention_fused(q, k, v, window, scale, keep_lse):
    B, T, H, _ = q.shape
    return torch.empty_like(v), (q.new_empty((B, H, T), dtype=torch.float32) if keep_lse else None)


@register_fake("lintime::sliding_window_attention_fused_bwd")
def _sliding_window_attention_fused_bwd(q, k, v, o, lse, grad_o, window, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@register_fake("lintime::short_convolution_fused")
def _short_convolution_fused(x, weight, bias, silu, initial_state, output_final_state):
    y = torch.empty_like(x)
    if not output_final_state:
        return y, None
    return y, x.new_empty((x.shape[0], weight.shape[2] - 1, x.shape[2]))


@register_fake("lintime::short_convolution_fused_bwd")
def _short_convolution_fused_bwd(x, weight, bias, silu, grad_y):
    return torch.empty_like(x), torch.empty_like(weight), None if bias is None else torch.empty_like(bias)
