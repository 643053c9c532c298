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


# The fused CUDA kernels return internals that their backward takes; traced code is given none,
# and the backward recomputes them (the general path's behaviour): the same values, more work.
@register_fake("lintime::gsa_chunk_with_internals")
def _gsa_chunk_with_internals(q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state,
                              cu_seqlens):
    return (*_gsa_outputs(q, k, v, s, g, cu_seqlens, output_final_state), [])


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
