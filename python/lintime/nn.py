"""fla's sequence-mixing layers as torch modules over lintime's ops (lintime.ops): the constructor
arguments, defaults and parameter names of fla (flash-linear-attention at commit bc3b101), so that
`layer.load_state_dict(fla_layer.state_dict())` works unchanged and gives fla's output.

    GatedSlotAttention    fla.layers.gsa.GatedSlotAttention
    GatedLinearAttention  fla.layers.gla.GatedLinearAttention
    BasedLinearAttention  fla.layers.based.BasedLinearAttention
    SlidingWindowAttention  fla.layers.attn.Attention with a window (and RoPE), over
                          lintime.ops.sliding_window_attention
    ShortConvolution      fla.modules.ShortConvolution (an nn.Conv1d, weight [D, 1, W])
    RMSNorm               the weight-only RMSNorm of fla's g_norm / g_norm_swish_gate / q_norm

Every layer decodes through a state object of its own (`layer.init_state(batch_size)`):

    y = layer(x)                              # x [B, T, hidden], y [B, T, hidden]
    y, state = layer(x, use_cache=True)       # a fresh state, filled by x (a prefill)
    y, state = layer(x_next, state=state)     # T == 1: one step through lintime's step ops;
                                              # T > 1: a chunked prefill continuing the state
The state's tensors are updated in place (the returned state is the one passed). Decoding is for
inference: the step ops are not differentiable.

Where these layers differ from fla:
  * forward(hidden_states, state=None, use_cache=False) takes no attention_mask, cu_seqlens or
    past_key_values (fla's Cache); it returns the output alone, or (output, state) when a state is
    passed or use_cache is set, not fla's (o, None, past_key_values) triple.
  * Grouped heads (num_kv_heads < num_heads) keep one recurrent state per key/value head and never
    repeat k and v (fla repeats them for GSA and GLA); the outputs are the same.
    SlidingWindowAttention does repeat them (lintime's sliding-window op has no grouped form).
  * Recurrent states are float32 (float64 for a float64 layer) in lintime's layouts: GLA
    [B, H, K, V] (fla's layer keeps [B, H, V, K]); short-convolution caches [B, W - 1, D] (fla:
    [B, D, W]).
  * `mode` selects nothing for GSA and GLA (every mode is lintime's chunked kernel; fla's modes
    compute the same recurrence). BASED's modes differ in fla and are kept: "parallel" scores
    1 + a + a²/2 with a = q·k (fla passes scale=1) and normaliser eps 1e-6; "chunk" and
    "fused_chunk" use fla's TaylorFeatureMap, a = q·k / √D, with eps 1e-10.
  * GSA's g_norm is sized value_dim (fla: hidden_size, the same for expand_v = 1, the only case
    fla's forward runs). As in fla, GSA's output norm uses eps 1e-5 whatever norm_eps (fla calls
    rms_norm_linear without it), and use_output_gate and use_norm change nothing.
  * ShortConvolution.forward(x, state=None) returns y alone without a state (fla: (y, cache)).
  * Constructor arguments are validated: bad ones raise ValueError with one line naming the
    argument (fla asserts some and ignores unknown keyword arguments; these layers refuse them).
"""
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lintime import ops

_lintime = torch.ops.lintime


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _positive_int(name, value, who):
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             f"{who}: {name} must be a positive int, got {value!r}")


def _no_extra_arguments(kwargs, who):
    _require(not kwargs, f"{who}: unexpected argument(s) {', '.join(sorted(kwargs))} (not fla's, or not supported)")


def _compute_dtype(dtype):
    # lintime's recurrent states: float64 for float64 inputs, float32 otherwise.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _parameter(module):
    return next(module.parameters())


# fla's ACT2FN entries that these layers accept as feature maps and output gates.
_ACTIVATIONS = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "swish": F.silu,
    "sqrelu": lambda x: F.relu(x).square(),
    "gelu": lambda x: F.gelu(x, approximate="tanh"),  # fla's fast_gelu_impl is the tanh form
}


def _activation(name, argument, who, allow_none=False):
    if name is None and allow_none:
        return None
    _require(name in _ACTIVATIONS, f"{who}: {argument} must be one of {sorted(_ACTIVATIONS)}"
             f"{' or None' if allow_none else ''}, got {name!r}")
    return _ACTIVATIONS[name]


class _DecodingLayer(nn.Module):
    """The forward/state protocol shared by the layers: `_forward(x, state)` does the work."""

    state_class = None

    def forward(self, hidden_states, state=None, use_cache=False):
        _require(hidden_states.dim() == 3 and hidden_states.shape[-1] == self.hidden_size,
                 f"{type(self).__name__}: hidden_states must have shape [B, T, {self.hidden_size}], "
                 f"got {list(hidden_states.shape)}")
        if state is None and not use_cache:
            return self._forward(hidden_states, None)
        if state is None:
            state = self.init_state(hidden_states.shape[0], hidden_states.device)
        _require(isinstance(state, self.state_class),
                 f"{type(self).__name__}: state must be a {self.state_class.__name__} (from init_state), "
                 f"got {type(state).__name__}")
        _require(state.batch_size == hidden_states.shape[0],
                 f"{type(self).__name__}: the state holds {state.batch_size} sequences, hidden_states "
                 f"{hidden_states.shape[0]}")
        output = self._forward(hidden_states, state)
        state.seen_tokens += hidden_states.shape[1]
        return output, state


class RMSNorm(nn.Module):
    """fla's RMSNorm (bias-free) and FusedRMSNormGated: y = x / rms(x) · weight [· act(gate)],
    computed in float32 (float64 for float64 inputs) as fla does, returned in x's dtype. The weight
    is float32 at construction (fla builds g_norm with dtype=torch.float32)."""

    def __init__(self, hidden_size, elementwise_affine=True, eps=1e-5, gate_activation=None):
        super().__init__()
        _positive_int("hidden_size", hidden_size, "RMSNorm")
        self.hidden_size = hidden_size
        self.eps = float(eps)
        self.gate_activation = gate_activation
        self.gate_fn = _activation(gate_activation, "gate_activation", "RMSNorm", allow_none=True)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size, dtype=torch.float32))
        else:
            self.register_parameter("weight", None)

    def forward(self, x, gate=None):
        compute = _compute_dtype(x.dtype)
        y = x.to(compute)
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(compute)
        if gate is not None:
            y = y * self.gate_fn(gate.to(compute))
        return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Short convolution

@dataclasses.dataclass
class ShortConvolutionState:
    """The last W - 1 inputs of each sequence, oldest first: cache [B, W - 1, D] in the layer's dtype."""
    cache: torch.Tensor
    seen_tokens: int = 0

    @property
    def batch_size(self):
        return self.cache.shape[0]


class ShortConvolution(nn.Conv1d, _DecodingLayer):
    """fla's ShortConvolution: a causal depthwise convolution y_t = act(b + Σ_j w[:, 0, j] ·
    x_{t-W+1+j}) over x [B, T, D], weight [D, 1, W], activation "silu"/"swish" or None.
    `backend` is accepted for fla's callers and ignored (lintime picks its kernel)."""

    state_class = ShortConvolutionState

    def __init__(self, hidden_size, kernel_size, bias=False, activation="silu", backend="triton", device=None,
                 dtype=None):
        _positive_int("hidden_size", hidden_size, "ShortConvolution")
        _positive_int("kernel_size", kernel_size, "ShortConvolution")
        _require(activation in (None, "silu", "swish"),
                 f"ShortConvolution: activation must be 'silu', 'swish' or None, got {activation!r}")
        _require(backend in ("triton", "cuda"), f"ShortConvolution: backend must be 'triton' or 'cuda', got {backend!r}")
        super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, bias=bias,
                         padding=kernel_size - 1, device=device, dtype=dtype)
        self.hidden_size = hidden_size
        self.activation = activation
        self.backend = backend

    # nn.Conv1d comes first in the bases (fla's parameter layout); the forward is the layers' own.
    forward = _DecodingLayer.forward

    def init_state(self, batch_size, device=None):
        """A zero state (no earlier inputs) for `batch_size` sequences."""
        weight = self.weight
        return ShortConvolutionState(weight.new_zeros((batch_size, self.kernel_size[0] - 1, self.hidden_size),
                                                      device=device or weight.device))

    def _forward(self, x, state):
        if state is not None and x.shape[1] == 1:
            y = _lintime.short_convolution_step_(x[:, 0], self.weight, self.bias, self.activation is not None,
                                                 state.cache)
            return y.unsqueeze(1)
        y, final_state = ops.short_convolution(x, self.weight, self.bias, self.activation,
                                               initial_state=None if state is None else state.cache,
                                               output_final_state=state is not None)
        if state is not None:
            state.cache.copy_(final_state)
        return y


def _short_convolutions(module, use_short_conv, conv_size, conv_bias, sizes):
    # fla's q_conv1d / k_conv1d / v_conv1d, all with SiLU.
    if use_short_conv:
        _positive_int("conv_size", conv_size, type(module).__name__)
        for name, size in zip(("q_conv1d", "k_conv1d", "v_conv1d"), sizes):
            setattr(module, name, ShortConvolution(size, conv_size, bias=conv_bias, activation="silu"))


def _project_qkv(module, x, conv_states):
    q, k, v = module.q_proj(x), module.k_proj(x), module.v_proj(x)
    if not module.use_short_conv:
        return q, k, v
    convolutions = (module.q_conv1d, module.k_conv1d, module.v_conv1d)
    if conv_states is None:
        return tuple(conv(y) for conv, y in zip(convolutions, (q, k, v)))
    return tuple(conv._forward(y, conv_state) for conv, y, conv_state in zip(convolutions, (q, k, v), conv_states))


def _conv_states(module, batch_size, device):
    if not module.use_short_conv:
        return None
    return tuple(conv.init_state(batch_size, device) for conv in (module.q_conv1d, module.k_conv1d, module.v_conv1d))


def _check_head_split(who, num_heads, num_kv_heads, key_dim, value_dim):
    _positive_int("num_heads", num_heads, who)
    _positive_int("num_kv_heads", num_kv_heads, who)
    _require(num_heads % num_kv_heads == 0,
             f"{who}: num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    _require(key_dim > 0 and key_dim % num_heads == 0,
             f"{who}: key_dim = int(hidden_size * expand_k) = {key_dim} must be a positive multiple of num_heads "
             f"({num_heads}); check expand_k")
    _require(value_dim > 0 and value_dim % num_heads == 0,
             f"{who}: value_dim = int(hidden_size * expand_v) = {value_dim} must be a positive multiple of num_heads "
             f"({num_heads}); check expand_v")


# ---------------------------------------------------------------------------------------------
# Gated slot attention

@dataclasses.dataclass
class GatedSlotAttentionState:
    """state_k [B, H, K, M], state_v [B, H, M, V] (H key/value heads, K and V per head, M slots;
    float32, float64 for a float64 layer); conv: the three ShortConvolutionStates of q, k, v or None."""
    state_k: torch.Tensor
    state_v: torch.Tensor
    conv: tuple = None
    seen_tokens: int = 0

    @property
    def batch_size(self):
        return self.state_k.shape[0]


class _T2RFeatureMap(nn.Module):
    # fla's T2RFeatureMap(head_dim, head_dim): relu(W x), parameter "layer.weight".
    def __init__(self, head_dim):
        super().__init__()
        self.layer = nn.Linear(head_dim, head_dim, bias=False)

    def forward(self, x):
        return F.relu(self.layer(x))


class _Elementwise(nn.Module):
    # fla's SwishFeatureMap / ReLUFeatureMap: no parameters.
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class GatedSlotAttention(_DecodingLayer):
    """fla's GatedSlotAttention (Zhang et al. 2024): q, k through the feature map, v through SiLU,
    slot gates g = logsigmoid(f_proj x) / gate_logit_normalizer with writes s = 1 - exp(g), the GSA
    recurrence over num_slots slots (lintime.ops.chunk_gsa; gsa_step_ when decoding), then
    o_proj(RMSNorm(SiLU(o))). scale defaults to 1 as fla's layer (None: head_k_dim^-0.5).
    See the module docstring for forward(x, state=None, use_cache=False) and init_state."""

    state_class = GatedSlotAttentionState

    def __init__(self, mode="chunk", hidden_size=1024, expand_k=1., expand_v=1., num_heads=4, num_kv_heads=None,
                 use_short_conv=False, conv_size=4, conv_bias=False, num_slots=None, elementwise_affine=True,
                 norm_eps=1e-5, gate_logit_normalizer=8, feature_map="swish", use_output_gate=False, use_norm=True,
                 layer_idx=None, scale=1., **kwargs):
        super().__init__()
        who = "GatedSlotAttention"
        _no_extra_arguments(kwargs, who)
        _require(mode in ("chunk", "fused_recurrent"), f"{who}: mode must be 'chunk' or 'fused_recurrent', got {mode!r}")
        _positive_int("hidden_size", hidden_size, who)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        key_dim, value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        _check_head_split(who, num_heads, num_kv_heads, key_dim, value_dim)
        _require(gate_logit_normalizer > 0, f"{who}: gate_logit_normalizer must be > 0, got {gate_logit_normalizer!r}")
        _require(scale is None or scale > 0, f"{who}: scale must be > 0 or None, got {scale!r}")
        _require(feature_map in ("swish", "relu", "t2r"),
                 f"{who}: feature_map must be 'swish', 'relu' or 't2r', got {feature_map!r}")

        self.mode = mode
        self.hidden_size = hidden_size
        self.expand_k, self.expand_v = expand_k, expand_v
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.key_dim, self.value_dim = key_dim, value_dim
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.num_slots = self.head_k_dim if num_slots is None else num_slots
        _positive_int("num_slots", self.num_slots, who)
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.gate_logit_normalizer = gate_logit_normalizer
        self.use_output_gate, self.use_norm = use_output_gate, use_norm
        self.layer_idx = layer_idx
        self.scale = scale

        if feature_map == "t2r":
            self.feature_map = _T2RFeatureMap(self.head_k_dim)
        else:
            self.feature_map = _Elementwise(F.silu if feature_map == "swish" else F.relu)
        kv_key_dim, kv_value_dim = num_kv_heads * self.head_k_dim, num_kv_heads * self.head_v_dim
        self.q_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, kv_key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, kv_value_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, num_kv_heads * self.num_slots, bias=False)
        _short_convolutions(self, use_short_conv, conv_size, conv_bias, (key_dim, kv_key_dim, kv_value_dim))
        # fla calls its fused norm + o_proj without norm_eps, so the eps that counts is 1e-5.
        self.g_norm = RMSNorm(value_dim, elementwise_affine, eps=1e-5)
        self.norm_eps = norm_eps
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def init_state(self, batch_size, device=None):
        """A zero state for `batch_size` sequences on `device` (default: the parameters')."""
        weight = _parameter(self)
        device = device or weight.device
        dtype = _compute_dtype(weight.dtype)
        H, K, V, M = self.num_kv_heads, self.head_k_dim, self.head_v_dim, self.num_slots
        return GatedSlotAttentionState(torch.zeros(batch_size, H, K, M, device=device, dtype=dtype),
                                       torch.zeros(batch_size, H, M, V, device=device, dtype=dtype),
                                       _conv_states(self, batch_size, device))

    def _forward(self, x, state):
        B, T, _ = x.shape
        q, k, v = _project_qkv(self, x, None if state is None else state.conv)
        q = self.feature_map(q.view(B, T, self.num_heads, self.head_k_dim))
        k = self.feature_map(k.view(B, T, self.num_kv_heads, self.head_k_dim))
        v = F.silu(v.view(B, T, self.num_kv_heads, self.head_v_dim))
        g = F.logsigmoid(self.f_proj(x).view(B, T, self.num_kv_heads, self.num_slots)) / self.gate_logit_normalizer
        s = 1 - g.exp()
        scale = self.head_k_dim ** -0.5 if self.scale is None else float(self.scale)
        if state is not None and T == 1:
            o = _lintime.gsa_step_(q[:, 0], k[:, 0], v[:, 0], s[:, 0], g[:, 0], scale, state.state_k, state.state_v)
            o = o.unsqueeze(1)
        else:
            initial = None if state is None else (state.state_k, state.state_v)
            o, final = ops.chunk_gsa(q, k, v, s, g, scale=scale, initial_state=initial,
                                     output_final_state=state is not None)
            if state is not None:
                state.state_k.copy_(final[0])
                state.state_v.copy_(final[1])
        o = self.g_norm(F.silu(o.reshape(B, T, self.value_dim)))
        return self.o_proj(o)


# ---------------------------------------------------------------------------------------------
# Gated linear attention

@dataclasses.dataclass
class GatedLinearAttentionState:
    """state [B, H, K, V] (H key/value heads; float32, float64 for a float64 layer); conv: the
    three ShortConvolutionStates of q, k, v or None."""
    state: torch.Tensor
    conv: tuple = None
    seen_tokens: int = 0

    @property
    def batch_size(self):
        return self.state.shape[0]


class GatedLinearAttention(_DecodingLayer):
    """fla's GatedLinearAttention (Yang et al. 2023): key gates gk = logsigmoid(gk_proj x) /
    gate_logit_normalizer (clamped below at clamp_min), the optional feature_map on q and k after
    the gates, S_t = Diag(exp(gk_t)) S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t / √head_k_dim
    (lintime.ops.chunk_gla; gla_step_ when decoding), a per-head RMSNorm, the output gate
    (g_norm_swish_gate when gate_fn is swish and fuse_norm, else g_norm then · gate_fn(g_proj x)),
    o_proj. feature_map and gate_fn: one of fla's ACT2FN names relu, sigmoid, silu, swish, sqrelu,
    gelu. See the module docstring for forward(x, state=None, use_cache=False) and init_state."""

    state_class = GatedLinearAttentionState

    def __init__(self, mode="chunk", hidden_size=1024, expand_k=0.5, expand_v=1.0, num_heads=4, num_kv_heads=None,
                 feature_map=None, use_short_conv=False, conv_size=4, conv_bias=False, use_output_gate=True,
                 gate_fn="swish", elementwise_affine=True, norm_eps=1e-5, gate_logit_normalizer=16,
                 gate_low_rank_dim=16, clamp_min=None, fuse_norm=True, layer_idx=None, **kwargs):
        super().__init__()
        who = "GatedLinearAttention"
        _no_extra_arguments(kwargs, who)
        _require(mode in ("chunk", "fused_recurrent", "fused_chunk"),
                 f"{who}: mode must be 'chunk', 'fused_recurrent' or 'fused_chunk', got {mode!r}")
        _positive_int("hidden_size", hidden_size, who)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        key_dim, value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        _check_head_split(who, num_heads, num_kv_heads, key_dim, value_dim)
        _positive_int("gate_low_rank_dim", gate_low_rank_dim, who)
        _require(gate_logit_normalizer > 0, f"{who}: gate_logit_normalizer must be > 0, got {gate_logit_normalizer!r}")
        _require(clamp_min is None or (isinstance(clamp_min, (int, float)) and clamp_min <= 0),
                 f"{who}: clamp_min must be a number <= 0 (a log gate) or None, got {clamp_min!r}")

        self.mode = mode
        self.hidden_size = hidden_size
        self.expand_k, self.expand_v = expand_k, expand_v
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.key_dim, self.value_dim = key_dim, value_dim
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.feature_map = feature_map
        self.feature_map_fn = _activation(feature_map, "feature_map", who, allow_none=True)
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.use_output_gate = use_output_gate
        self.gate_fn_name = gate_fn
        gate_activation = _activation(gate_fn, "gate_fn", who)
        self.gate_logit_normalizer = gate_logit_normalizer
        self.clamp_min = clamp_min
        self.layer_idx = layer_idx

        kv_key_dim, kv_value_dim = num_kv_heads * self.head_k_dim, num_kv_heads * self.head_v_dim
        self.q_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, kv_key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, kv_value_dim, bias=False)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, value_dim, bias=False)
        _short_convolutions(self, use_short_conv, conv_size, conv_bias, (key_dim, kv_key_dim, kv_value_dim))
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, kv_key_dim, bias=True))
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)
        # fla's parameter names: the fused norm + swish gate only in its default configuration.
        self.fuse_norm_and_gate = gate_fn == "swish" and bool(fuse_norm) and use_output_gate
        if self.fuse_norm_and_gate:
            self.g_norm_swish_gate = RMSNorm(self.head_v_dim, elementwise_affine, norm_eps, gate_activation="swish")
        else:
            self.g_norm = RMSNorm(self.head_v_dim, elementwise_affine, norm_eps)
            self.gate_fn = gate_activation

    def init_state(self, batch_size, device=None):
        """A zero state for `batch_size` sequences on `device` (default: the parameters')."""
        weight = _parameter(self)
        device = device or weight.device
        state = torch.zeros(batch_size, self.num_kv_heads, self.head_k_dim, self.head_v_dim, device=device,
                            dtype=_compute_dtype(weight.dtype))
        return GatedLinearAttentionState(state, _conv_states(self, batch_size, device))

    def _forward(self, x, state):
        B, T, _ = x.shape
        q, k, v = _project_qkv(self, x, None if state is None else state.conv)
        q = q.view(B, T, self.num_heads, self.head_k_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_k_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_v_dim)
        gk = F.logsigmoid(self.gk_proj(x).view(B, T, self.num_kv_heads, self.head_k_dim)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        scale = self.head_k_dim ** -0.5
        if state is not None and T == 1:
            o = _lintime.gla_step_(q[:, 0], k[:, 0], v[:, 0], gk[:, 0], False, scale, state.state).unsqueeze(1)
        else:
            o, final = ops.chunk_gla(q, k, v, gk, scale=scale, initial_state=None if state is None else state.state,
                                     output_final_state=state is not None)
            if state is not None:
                state.state.copy_(final)
        if self.use_output_gate:
            g = self.g_proj(x)
            if self.fuse_norm_and_gate:
                o = self.g_norm_swish_gate(o, g.view(B, T, self.num_heads, self.head_v_dim)).reshape(B, T, -1)
            else:
                o = self.g_norm(o).reshape(B, T, -1) * self.gate_fn(g)
        else:
            o = self.g_norm(o).reshape(B, T, -1)
        return self.o_proj(o)


# ---------------------------------------------------------------------------------------------
# BASED's linear attention

@dataclasses.dataclass
class BasedLinearAttentionState:
    """state [B, H, E, V] and normalizer [B, H, E] of the Taylor feature map, E = 1 + D + D²
    (float32, float64 for a float64 layer)."""
    state: torch.Tensor
    normalizer: torch.Tensor
    seen_tokens: int = 0

    @property
    def batch_size(self):
        return self.state.shape[0]


class BasedLinearAttention(_DecodingLayer):
    """fla's BasedLinearAttention: q, k = q_proj x, k_proj x; v = v_proj x; per head the causal
    normalised linear attention with the second-order Taylor feature map, o_proj. fla's forward
    splits q and k into heads of head_dim = hidden_size / num_key_value_heads features, so it runs
    only with num_heads == num_key_value_heads and feature_dim == head_dim; other settings raise
    ValueError here. eps is kept for fla's signature (fla's forward does not use it either; see
    the module docstring for the modes' normalisers). causal=False is not supported.
    See the module docstring for forward(x, state=None, use_cache=False) and init_state."""

    state_class = BasedLinearAttentionState

    def __init__(self, hidden_size, feature_dim=16, num_key_value_heads=12, num_heads=12, feature_name="taylor_exp",
                 eps=1e-12, causal=True, mode="parallel"):
        super().__init__()
        who = "BasedLinearAttention"
        _positive_int("hidden_size", hidden_size, who)
        _positive_int("feature_dim", feature_dim, who)
        _positive_int("num_heads", num_heads, who)
        _positive_int("num_key_value_heads", num_key_value_heads, who)
        _require(feature_name == "taylor_exp", f"{who}: feature_name must be 'taylor_exp', got {feature_name!r}")
        _require(causal is True, f"{who}: causal must be True (fla's forward is causal only), got {causal!r}")
        _require(mode in ("parallel", "chunk", "fused_chunk"),
                 f"{who}: mode must be 'parallel', 'chunk' or 'fused_chunk', got {mode!r}")
        _require(num_heads == num_key_value_heads,
                 f"{who}: num_heads ({num_heads}) must equal num_key_value_heads ({num_key_value_heads})")
        _require(hidden_size % num_heads == 0, f"{who}: hidden_size ({hidden_size}) must be a multiple of num_heads "
                                               f"({num_heads})")
        _require(feature_dim == hidden_size // num_heads,
                 f"{who}: feature_dim ({feature_dim}) must equal hidden_size / num_heads ({hidden_size // num_heads}), "
                 f"the head size fla's forward splits q and k into")
        self.hidden_size = hidden_size
        self.mode = mode
        self.feature_name = feature_name
        self.feature_dim = feature_dim
        self.num_key_value_heads, self.num_heads = num_key_value_heads, num_heads
        self.head_dim = hidden_size // num_key_value_heads
        self.causal = causal
        self.eps = eps
        self.q_proj = nn.Linear(hidden_size, feature_dim * num_heads, bias=False)
        self.k_proj = nn.Linear(hidden_size, feature_dim * num_heads, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        # lintime's Taylor map scores 1 + a + a²/2 with a = q·k / √D; fla's parallel_based (scale=1)
        # has a = q·k, so its q is scaled by √D; the chunk modes' TaylorFeatureMap is lintime's.
        self._query_factor = feature_dim ** 0.5 if mode == "parallel" else 1.0
        self._normalizer_eps = 1e-6 if mode == "parallel" else 1e-10

    def init_state(self, batch_size, device=None):
        """A zero state for `batch_size` sequences on `device` (default: the parameters')."""
        weight = _parameter(self)
        device = device or weight.device
        dtype = _compute_dtype(weight.dtype)
        E = 1 + self.feature_dim + self.feature_dim ** 2
        return BasedLinearAttentionState(
            torch.zeros(batch_size, self.num_heads, E, self.head_dim, device=device, dtype=dtype),
            torch.zeros(batch_size, self.num_heads, E, device=device, dtype=dtype))

    def _forward(self, x, state):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.feature_dim) * self._query_factor
        k = self.k_proj(x).view(B, T, self.num_heads, self.feature_dim)
        v = self.v_proj(x).view(B, T, self.num_heads, self.head_dim)
        if state is not None and T == 1:
            o = _lintime.taylor_attention_step_(q[:, 0], k[:, 0], v[:, 0], True, self._normalizer_eps, state.state,
                                                state.normalizer).unsqueeze(1)
        else:
            initial = None if state is None else (state.state, state.normalizer)
            o, final = ops.taylor_linear_attention(q, k, v, normalize=True, eps=self._normalizer_eps,
                                                   initial_state=initial, output_final_state=state is not None)
            if state is not None:
                state.state.copy_(final[0])
                state.normalizer.copy_(final[1])
        return self.o_proj(o.reshape(B, T, -1).to(x.dtype))


# ---------------------------------------------------------------------------------------------
# Sliding-window softmax attention

@dataclasses.dataclass
class SlidingWindowAttentionState:
    """Ring buffers of the last window keys and values per query head: key_cache [B, H, w, D],
    value_cache [B, H, w, D] (keys after RoPE, in the layer's dtype), positions [B] int64 (tokens
    seen per sequence)."""
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    positions: torch.Tensor
    seen_tokens: int = 0

    @property
    def batch_size(self):
        return self.key_cache.shape[0]


def apply_rotary(x, positions, theta):
    """fla's RotaryEmbedding (non-interleaved, whole head): x [B, T, H, D], positions [B, T];
    the two halves of each head rotate by positions · theta^(-2i/D). Angles in float32 (float64
    for float64 x)."""
    D = x.shape[-1]
    compute = _compute_dtype(x.dtype)
    inverse_frequency = 1.0 / theta ** (torch.arange(0, D, 2, device=x.device, dtype=compute) / D)
    angles = positions.to(compute)[..., None] * inverse_frequency  # [B, T, D/2]
    cos, sin = (torch.cat([f, f], -1)[:, :, None, :].to(x.dtype) for f in (angles.cos(), angles.sin()))
    first, second = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-second, first], -1) * sin


class SlidingWindowAttention(_DecodingLayer):
    """Causal softmax attention over a sliding window, with fla's Attention layer's arguments and
    parameter names (q_proj, k_proj, v_proj with qkv_bias, o_proj, q_norm / k_norm with qk_norm)
    and RoPE over each head (rope_theta; None: no RoPE). window_size has fla's (and flash_attn's)
    meaning, which is lintime's `window`: each query sees window_size keys, itself included
    (flash_attn window_size=(window_size - 1, 0)); it is required (fla's None, full attention,
    has no bounded decoding state). Scores are scaled by head_dim^-0.5. max_position_embeddings
    only sized fla's RoPE tables and changes nothing. Grouped kv heads are repeated to num_heads.
    See the module docstring for forward(x, state=None, use_cache=False) and init_state."""

    state_class = SlidingWindowAttentionState

    def __init__(self, hidden_size=2048, num_heads=32, num_kv_heads=None, qkv_bias=False, qk_norm=False,
                 window_size=None, rope_theta=10000., max_position_embeddings=None, layer_idx=None):
        super().__init__()
        who = "SlidingWindowAttention"
        _positive_int("hidden_size", hidden_size, who)
        _positive_int("num_heads", num_heads, who)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        _positive_int("num_kv_heads", num_kv_heads, who)
        _require(num_heads % num_kv_heads == 0,
                 f"{who}: num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        _require(hidden_size % num_heads == 0,
                 f"{who}: hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
        _require(isinstance(window_size, int) and not isinstance(window_size, bool) and window_size >= 1,
                 f"{who}: window_size must be an int >= 1 (keys per query, itself included), got {window_size!r}")
        _require(rope_theta is None or rope_theta > 0, f"{who}: rope_theta must be > 0 or None, got {rope_theta!r}")
        self.hidden_size = hidden_size
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.head_dim = hidden_size // num_heads
        _require(rope_theta is None or self.head_dim % 2 == 0,
                 f"{who}: RoPE needs an even head_dim = hidden_size / num_heads, got {self.head_dim}")
        self.kv_dim = num_kv_heads * self.head_dim
        self.qkv_bias, self.qk_norm = qkv_bias, qk_norm
        self.window_size = window_size
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)

    def init_state(self, batch_size, device=None):
        """An empty cache for `batch_size` sequences on `device` (default: the parameters')."""
        weight = self.q_proj.weight
        device = device or weight.device
        shape = (batch_size, self.num_heads, self.window_size, self.head_dim)
        return SlidingWindowAttentionState(torch.zeros(shape, device=device, dtype=weight.dtype),
                                           torch.zeros(shape, device=device, dtype=weight.dtype),
                                           torch.zeros(batch_size, device=device, dtype=torch.int64))

    def _forward(self, x, state):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_theta is not None:
            start = torch.zeros(B, dtype=torch.int64, device=x.device) if state is None else state.positions
            positions = start[:, None] + torch.arange(T, device=x.device)
            q, k = apply_rotary(q, positions, self.rope_theta), apply_rotary(k, positions, self.rope_theta)
        if self.num_kv_groups > 1:
            k, v = (y.repeat_interleave(self.num_kv_groups, dim=2) for y in (k, v))
        scale = self.head_dim ** -0.5
        if state is None:
            o = ops.sliding_window_attention(q, k, v, self.window_size, scale=scale)
        elif state.seen_tokens == 0 and T > 1:
            o = ops.sliding_window_attention(q, k, v, self.window_size, scale=scale)
            key_cache, value_cache, positions = _lintime.sliding_window_cache_from_prefill(k, v, self.window_size)
            state.key_cache.copy_(key_cache)
            state.value_cache.copy_(value_cache)
            state.positions.copy_(positions)
        else:
            # One token, or a prefill continuing a filled cache: token by token through the ring buffer.
            o = torch.stack([_lintime.sliding_window_attention_step_(q[:, t], k[:, t], v[:, t], self.window_size,
                                                                     scale, state.key_cache, state.value_cache,
                                                                     state.positions)
                             for t in range(T)], dim=1)
        return self.o_proj(o.reshape(B, T, self.hidden_size))


__all__ = ["GatedSlotAttention", "GatedSlotAttentionState", "GatedLinearAttention", "GatedLinearAttentionState",
           "BasedLinearAttention", "BasedLinearAttentionState", "SlidingWindowAttention",
           "SlidingWindowAttentionState", "ShortConvolution", "ShortConvolutionState", "RMSNorm", "apply_rotary"]
