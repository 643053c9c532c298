"""lintime.nn: fla's parameter names, values against plain-PyTorch float64 references (naive
per-token recurrences and masked attention written here), decoding through the states, a few
training steps of a GSA stack, constructor validation, and fla's own outputs (fixtures written by
scripts/make_fla_layer_fixtures.py).

Tolerances: float64 layers against float64 references agree to rounding (≈1e-15 relative per
operation, a few hundred operations deep), so 1e-10 relative leaves a wide margin while still
catching any real difference (a wrong gate, norm or scale moves the output by > 1e-3). The fla
fixtures are float32 on both sides: 1e-5 relative (they agree to ≈3e-7).
"""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import lintime.nn as lnn

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "fla_layers")
HIDDEN = 32


def relative_error(actual, expected):
    return ((actual - expected).norm() / expected.norm()).item()


def randomize(layer, seed=0):
    """Weights of a trained magnitude (N(0, 1/fan_in)), norm weights in [0.5, 2], gate biases
    nonzero, so that every parameter changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if "norm" in name:
                parameter.copy_(0.5 + 1.5 * torch.rand(parameter.shape, generator=generator, dtype=torch.float64))
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                                / parameter.shape[-1] ** 0.5)
    return layer


def make(cls, seed=0, **kwargs):
    return randomize(cls(**kwargs).double(), seed)


def inputs(batch=2, length=9, seed=1):
    return torch.randn(batch, length, HIDDEN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# References (float64, per token)

def reference_rms_norm(x, weight, eps):
    y = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def reference_short_conv(x, weight, bias, silu):
    # y_t = Σ_j w[:, j] x_{t-W+1+j}, zeros before the first token.
    B, T, D = x.shape
    W = weight.shape[-1]
    padded = torch.cat([x.new_zeros(B, W - 1, D), x], 1)
    y = sum(weight[:, 0, j] * padded[:, j:j + T] for j in range(W))
    if bias is not None:
        y = y + bias
    return F.silu(y) if silu else y


def project_qkv(layer, x):
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.use_short_conv:
        q, k, v = (reference_short_conv(y, conv.weight, conv.bias, True)
                   for y, conv in zip((q, k, v), (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d)))
    return q, k, v


def heads(x, count):
    return x.reshape(*x.shape[:2], count, -1)


def reference_gsa_layer(layer, x):
    B, T, _ = x.shape
    H, G = layer.num_kv_heads, layer.num_kv_groups
    q, k, v = project_qkv(layer, x)
    q, k = layer.feature_map(heads(q, layer.num_heads)), layer.feature_map(heads(k, H))
    v = F.silu(heads(v, H))
    g = F.logsigmoid(heads(layer.f_proj(x), H)) / layer.gate_logit_normalizer
    s = 1 - g.exp()
    scale = layer.head_k_dim ** -0.5 if layer.scale is None else layer.scale
    o = x.new_zeros(B, T, layer.num_heads, layer.head_v_dim)
    for head in range(layer.num_heads):
        h = head // G  # query head h·G + j reads key/value head h (fla's repeat)
        hk = x.new_zeros(B, layer.head_k_dim, layer.num_slots)
        hv = x.new_zeros(B, layer.num_slots, layer.head_v_dim)
        for t in range(T):
            decay = g[:, t, h].exp()
            hk = hk * decay[:, None, :] + k[:, t, h, :, None] * s[:, t, h, None, :]
            hv = hv * decay[:, :, None] + s[:, t, h, :, None] * v[:, t, h, None, :]
            slots = torch.softmax(scale * torch.einsum("bk,bkm->bm", q[:, t, head], hk), -1)
            o[:, t, head] = torch.einsum("bm,bmv->bv", slots, hv)
    o = reference_rms_norm(F.silu(o.reshape(B, T, -1)), layer.g_norm.weight, 1e-5)
    return layer.o_proj(o)


def reference_gla_layer(layer, x):
    B, T, _ = x.shape
    H, G = layer.num_kv_heads, layer.num_kv_groups
    q, k, v = project_qkv(layer, x)
    q, k, v = heads(q, layer.num_heads), heads(k, H), heads(v, H)
    gk = F.logsigmoid(heads(layer.gk_proj[1](layer.gk_proj[0](x)), H)) / layer.gate_logit_normalizer
    if layer.clamp_min is not None:
        gk = gk.clamp_min(layer.clamp_min)
    if layer.feature_map == "relu":
        q, k = q.relu(), k.relu()
    o = x.new_zeros(B, T, layer.num_heads, layer.head_v_dim)
    for head in range(layer.num_heads):
        h = head // G
        state = x.new_zeros(B, layer.head_k_dim, layer.head_v_dim)
        for t in range(T):
            state = gk[:, t, h].exp()[:, :, None] * state + k[:, t, h, :, None] * v[:, t, h, None, :]
            o[:, t, head] = torch.einsum("bk,bkv->bv", q[:, t, head] * layer.head_k_dim ** -0.5, state)
    if layer.use_output_gate:
        gate = heads(layer.g_proj(x), layer.num_heads)
        norm = layer.g_norm_swish_gate if layer.fuse_norm_and_gate else layer.g_norm
        o = reference_rms_norm(o, norm.weight, norm.eps)
        o = o * (F.silu(gate) if layer.gate_fn_name == "swish" else torch.sigmoid(gate))
    else:
        o = reference_rms_norm(o, layer.g_norm.weight, layer.g_norm.eps)
    return layer.o_proj(o.reshape(B, T, -1))


def reference_based_layer(layer, x):
    B, T, _ = x.shape
    H, D = layer.num_heads, layer.feature_dim
    q, k, v = heads(layer.q_proj(x), H), heads(layer.k_proj(x), H), heads(layer.v_proj(x), H)
    a = torch.einsum("bthd,bshd->bhts", q, k)
    if layer.mode == "parallel":  # fla's parallel_based with scale=1, normaliser + 1e-6
        eps = 1e-6
    else:  # fla's TaylorFeatureMap(D): φ(q)·φ(k) = 1 + a/√D + a²/(2D), normaliser + 1e-10
        a, eps = a / math.sqrt(D), 1e-10
    weights = (1 + a + a.square() / 2) * torch.ones(T, T, dtype=torch.bool).tril()
    o = torch.einsum("bhts,bshv->bthv", weights, v) / (weights.sum(-1).transpose(1, 2)[..., None] + eps)
    return layer.o_proj(o.reshape(B, T, -1))


def reference_rotary(x, theta):
    # Pairs (x_i, x_{i+D/2}) rotate by angle t · theta^(-2i/D) at position t.
    T, D = x.shape[1], x.shape[-1]
    out = x.clone()
    for t in range(T):
        for i in range(D // 2):
            angle = t * theta ** (-2 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[:, t, :, i], x[:, t, :, i + D // 2]
            out[:, t, :, i], out[:, t, :, i + D // 2] = a * c - b * s, a * s + b * c
    return out


def reference_swa_layer(layer, x):
    B, T, _ = x.shape
    q = heads(layer.q_proj(x), layer.num_heads)
    k, v = heads(layer.k_proj(x), layer.num_kv_heads), heads(layer.v_proj(x), layer.num_kv_heads)
    if layer.qk_norm:
        q, k = reference_rms_norm(q, layer.q_norm.weight, 1e-5), reference_rms_norm(k, layer.k_norm.weight, 1e-5)
    if layer.rope_theta is not None:
        q, k = reference_rotary(q, layer.rope_theta), reference_rotary(k, layer.rope_theta)
    k, v = (y.repeat_interleave(layer.num_kv_groups, dim=2) for y in (k, v))
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(layer.head_dim)
    query, key = torch.arange(T)[:, None], torch.arange(T)[None, :]
    seen = (key <= query) & (key > query - layer.window_size)  # window_size keys, the query's own included
    o = torch.einsum("bhts,bshd->bthd", scores.masked_fill(~seen, float("-inf")).softmax(-1), v)
    return layer.o_proj(o.reshape(B, T, -1))


def reference_conv_layer(layer, x):
    return reference_short_conv(x, layer.weight, layer.bias, layer.activation is not None)


# name: (class, constructor arguments, reference)
CONFIGS = {
    "gsa": (lnn.GatedSlotAttention, dict(hidden_size=HIDDEN, num_heads=4, num_slots=6), reference_gsa_layer),
    "gsa_grouped_conv": (lnn.GatedSlotAttention, dict(hidden_size=HIDDEN, num_heads=4, num_kv_heads=2, num_slots=6,
                                                      use_short_conv=True, conv_bias=True, feature_map="relu",
                                                      scale=None, expand_v=0.5), reference_gsa_layer),
    "gsa_t2r": (lnn.GatedSlotAttention, dict(hidden_size=HIDDEN, num_heads=2, feature_map="t2r",
                                             elementwise_affine=False, gate_logit_normalizer=16), reference_gsa_layer),
    "gla": (lnn.GatedLinearAttention, dict(hidden_size=HIDDEN, num_heads=4), reference_gla_layer),
    "gla_grouped_conv": (lnn.GatedLinearAttention, dict(hidden_size=HIDDEN, num_heads=4, num_kv_heads=2,
                                                        use_short_conv=True, feature_map="relu", clamp_min=-0.05,
                                                        use_output_gate=False), reference_gla_layer),
    "gla_unfused": (lnn.GatedLinearAttention, dict(hidden_size=HIDDEN, num_heads=2, fuse_norm=False,
                                                   gate_fn="sigmoid", gate_low_rank_dim=4), reference_gla_layer),
    "based_parallel": (lnn.BasedLinearAttention, dict(hidden_size=HIDDEN, feature_dim=8, num_heads=4,
                                                      num_key_value_heads=4), reference_based_layer),
    "based_chunk": (lnn.BasedLinearAttention, dict(hidden_size=HIDDEN, feature_dim=8, num_heads=4,
                                                   num_key_value_heads=4, mode="chunk"), reference_based_layer),
    "swa": (lnn.SlidingWindowAttention, dict(hidden_size=HIDDEN, num_heads=4, window_size=3), reference_swa_layer),
    "swa_grouped_norm_bias": (lnn.SlidingWindowAttention, dict(hidden_size=HIDDEN, num_heads=4, num_kv_heads=2,
                                                               qkv_bias=True, qk_norm=True, window_size=5,
                                                               rope_theta=500.), reference_swa_layer),
    "swa_no_rope": (lnn.SlidingWindowAttention, dict(hidden_size=HIDDEN, num_heads=2, window_size=1,
                                                     rope_theta=None), reference_swa_layer),
    "conv": (lnn.ShortConvolution, dict(hidden_size=HIDDEN, kernel_size=4, bias=True), reference_conv_layer),
    "conv_linear": (lnn.ShortConvolution, dict(hidden_size=HIDDEN, kernel_size=3, activation=None),
                    reference_conv_layer),
}


# ---------------------------------------------------------------------------------------------
# Parameter names (fla's, read from fla/layers/{gsa,gla,based,attn}.py and fla/modules)

def w(*shape):
    return list(shape)


EXPECTED_STATE_DICTS = {
    # hidden 32, 4 heads of 8 (expand_k = expand_v = 1), 6 slots per head
    "gsa": {"q_proj.weight": w(32, 32), "k_proj.weight": w(32, 32), "v_proj.weight": w(32, 32),
            "f_proj.weight": w(24, 32), "g_norm.weight": w(32), "o_proj.weight": w(32, 32)},
    # 2 kv heads: k/v/f projections per group; value_dim 16; convolutions with bias
    "gsa_grouped_conv": {"q_proj.weight": w(32, 32), "k_proj.weight": w(16, 32), "v_proj.weight": w(8, 32),
                         "f_proj.weight": w(12, 32), "q_conv1d.weight": w(32, 1, 4), "q_conv1d.bias": w(32),
                         "k_conv1d.weight": w(16, 1, 4), "k_conv1d.bias": w(16), "v_conv1d.weight": w(8, 1, 4),
                         "v_conv1d.bias": w(8), "g_norm.weight": w(16), "o_proj.weight": w(32, 16)},
    # t2r: a trainable [head_k_dim, head_k_dim] map; no g_norm weight; num_slots = head_k_dim = 16
    "gsa_t2r": {"q_proj.weight": w(32, 32), "k_proj.weight": w(32, 32), "v_proj.weight": w(32, 32),
                "f_proj.weight": w(32, 32), "feature_map.layer.weight": w(16, 16), "o_proj.weight": w(32, 32)},
    # expand_k 0.5: key_dim 16; the low-rank gate (16) with a bias; fused norm + swish gate per head
    "gla": {"q_proj.weight": w(16, 32), "k_proj.weight": w(16, 32), "v_proj.weight": w(32, 32),
            "g_proj.weight": w(32, 32), "gk_proj.0.weight": w(16, 32), "gk_proj.1.weight": w(16, 16),
            "gk_proj.1.bias": w(16), "o_proj.weight": w(32, 32), "g_norm_swish_gate.weight": w(8)},
    "gla_grouped_conv": {"q_proj.weight": w(16, 32), "k_proj.weight": w(8, 32), "v_proj.weight": w(16, 32),
                         "q_conv1d.weight": w(16, 1, 4), "k_conv1d.weight": w(8, 1, 4),
                         "v_conv1d.weight": w(16, 1, 4), "gk_proj.0.weight": w(16, 32), "gk_proj.1.weight": w(8, 16),
                         "gk_proj.1.bias": w(8), "o_proj.weight": w(32, 32), "g_norm.weight": w(8)},
    "gla_unfused": {"q_proj.weight": w(16, 32), "k_proj.weight": w(16, 32), "v_proj.weight": w(32, 32),
                    "g_proj.weight": w(32, 32), "gk_proj.0.weight": w(4, 32), "gk_proj.1.weight": w(16, 4),
                    "gk_proj.1.bias": w(16), "o_proj.weight": w(32, 32), "g_norm.weight": w(16)},
    "based_parallel": {"q_proj.weight": w(32, 32), "k_proj.weight": w(32, 32), "v_proj.weight": w(32, 32),
                       "o_proj.weight": w(32, 32)},
    "swa": {"q_proj.weight": w(32, 32), "k_proj.weight": w(32, 32), "v_proj.weight": w(32, 32),
            "o_proj.weight": w(32, 32)},
    "swa_grouped_norm_bias": {"q_proj.weight": w(32, 32), "q_proj.bias": w(32), "k_proj.weight": w(16, 32),
                              "k_proj.bias": w(16), "v_proj.weight": w(16, 32), "v_proj.bias": w(16),
                              "o_proj.weight": w(32, 32), "q_norm.weight": w(8), "k_norm.weight": w(8)},
    "conv": {"weight": w(32, 1, 4), "bias": w(32)},
    "conv_linear": {"weight": w(32, 1, 3)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATE_DICTS))
def test_state_dict_names_and_shapes_are_flas(name):
    cls, kwargs, _ = CONFIGS[name]
    state_dict = cls(**kwargs).state_dict()
    assert {key: list(value.shape) for key, value in state_dict.items()} == EXPECTED_STATE_DICTS[name]


# ---------------------------------------------------------------------------------------------
# Values

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_float64_reference(name):
    cls, kwargs, reference = CONFIGS[name]
    layer = make(cls, **kwargs)
    x = inputs()
    with torch.no_grad():
        actual, expected = layer(x), reference(layer, x)
    assert actual.dtype == torch.float64 and actual.shape == x.shape
    assert relative_error(actual, expected) < 1e-10


@pytest.mark.parametrize("name", ["gsa_grouped_conv", "gla_grouped_conv", "based_chunk", "swa_grouped_norm_bias",
                                  "conv"])
def test_gradients_match_float64_reference(name):
    cls, kwargs, reference = CONFIGS[name]
    layer = make(cls, **kwargs)
    x = inputs(length=7).requires_grad_()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    gradients = []
    for forward in (layer, lambda y: reference(layer, y)):
        layer.zero_grad()
        x.grad = None
        (forward(x) * weights).sum().backward()
        gradients.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for actual, expected in zip(*gradients):
        assert relative_error(actual, expected) < 1e-10


# ---------------------------------------------------------------------------------------------
# Decoding through the state

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prefill_then_steps_equal_full_forward(name):
    cls, kwargs, _ = CONFIGS[name]
    layer = make(cls, **kwargs)
    x = inputs(length=10)
    with torch.no_grad():
        full = layer(x)
        prefix, state = layer(x[:, :4], use_cache=True)
        outputs = [prefix]
        for t in range(4, 10):
            output, returned = layer(x[:, t:t + 1], state=state)
            assert returned is state  # updated in place
            outputs.append(output)
    assert state.seen_tokens == 10
    assert relative_error(torch.cat(outputs, 1), full) < 1e-10


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_chunked_prefill_continues_the_state(name):
    # Steps from an empty state, then a multi-token chunk on a filled state, then a step.
    cls, kwargs, _ = CONFIGS[name]
    layer = make(cls, **kwargs)
    x = inputs(length=9)
    with torch.no_grad():
        full = layer(x)
        state = layer.init_state(x.shape[0])
        outputs = [layer(x[:, t:t + 1], state=state)[0] for t in range(2)]
        outputs.append(layer(x[:, 2:8], state=state)[0])
        outputs.append(layer(x[:, 8:], state=state)[0])
    assert relative_error(torch.cat(outputs, 1), full) < 1e-10


def test_float32_layer_decodes_with_float32_states():
    layer = randomize(lnn.GatedSlotAttention(hidden_size=HIDDEN, num_heads=4, num_slots=6))
    x = inputs(length=5).float()
    with torch.no_grad():
        full = layer(x)
        _, state = layer(x[:, :3], use_cache=True)
        last = [layer(x[:, t:t + 1], state=state)[0] for t in (3, 4)]
    assert state.state_k.dtype == torch.float32 and state.state_v.dtype == torch.float32
    assert relative_error(torch.cat(last, 1), full[:, 3:]) < 1e-5


def test_state_is_checked():
    gsa = lnn.GatedSlotAttention(hidden_size=HIDDEN, num_heads=4)
    gla = lnn.GatedLinearAttention(hidden_size=HIDDEN, num_heads=4)
    x = torch.randn(2, 3, HIDDEN)
    with pytest.raises(ValueError, match="GatedLinearAttentionState"):
        gla(x, state=gsa.init_state(2))
    with pytest.raises(ValueError, match="holds 1 sequences"):
        gsa(x, state=gsa.init_state(1))
    with pytest.raises(ValueError, match=r"hidden_states must have shape \[B, T, 32\]"):
        gsa(torch.randn(2, 3, 16))


# ---------------------------------------------------------------------------------------------
# Training

class TinyGsaModel(torch.nn.Module):
    def __init__(self, vocab=32, layers=2):
        super().__init__()
        self.embeddings = torch.nn.Embedding(vocab, HIDDEN)
        self.norms = torch.nn.ModuleList(torch.nn.RMSNorm(HIDDEN) for _ in range(layers))
        self.mixers = torch.nn.ModuleList(lnn.GatedSlotAttention(hidden_size=HIDDEN, num_heads=2, num_slots=8,
                                                                 layer_idx=i) for i in range(layers))
        self.final_norm = torch.nn.RMSNorm(HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, vocab, bias=False)

    def forward(self, ids):
        h = self.embeddings(ids)
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer(norm(h))
        return self.head(self.final_norm(h))


def test_gsa_stack_trains():
    torch.manual_seed(0)
    model = TinyGsaModel()
    ids = torch.randint(0, 32, (4, 17), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def loss():
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    assert all(math.isfinite(v) for v in losses)
    assert all(p.grad is not None for p in model.mixers.parameters())
    assert loss().item() < 0.8 * losses[0]


# ---------------------------------------------------------------------------------------------
# Constructor validation

BAD_ARGUMENTS = [
    (lnn.GatedSlotAttention, dict(hidden_size=32, num_heads=3), "key_dim"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, num_heads=4, num_kv_heads=3), "num_kv_heads"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, feature_map="elu"), "feature_map"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, mode="parallel"), "mode"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, num_slots=0), "num_slots"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, gate_logit_normalizer=0), "gate_logit_normalizer"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, use_short_conv=True, conv_size=0), "conv_size"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, expand_v=0.3), "expand_v"),
    (lnn.GatedSlotAttention, dict(hidden_size=32, use_gk=True), "use_gk"),
    (lnn.GatedLinearAttention, dict(hidden_size=32, feature_map="elu"), "feature_map"),
    (lnn.GatedLinearAttention, dict(hidden_size=32, gate_fn="tanh"), "gate_fn"),
    (lnn.GatedLinearAttention, dict(hidden_size=32, clamp_min=0.5), "clamp_min"),
    (lnn.GatedLinearAttention, dict(hidden_size=32, gate_low_rank_dim=0), "gate_low_rank_dim"),
    (lnn.GatedLinearAttention, dict(hidden_size=32, use_gv=True), "use_gv"),
    (lnn.GatedLinearAttention, dict(hidden_size=0), "hidden_size"),
    (lnn.BasedLinearAttention, dict(hidden_size=32, feature_dim=16, num_heads=4, num_key_value_heads=4),
     "feature_dim"),
    (lnn.BasedLinearAttention, dict(hidden_size=32, feature_dim=8, num_heads=4, num_key_value_heads=2),
     "num_key_value_heads"),
    (lnn.BasedLinearAttention, dict(hidden_size=32, feature_dim=8, num_heads=4, num_key_value_heads=4,
                                    feature_name="elu"), "feature_name"),
    (lnn.BasedLinearAttention, dict(hidden_size=32, feature_dim=8, num_heads=4, num_key_value_heads=4,
                                    causal=False), "causal"),
    (lnn.SlidingWindowAttention, dict(hidden_size=32, num_heads=4), "window_size"),
    (lnn.SlidingWindowAttention, dict(hidden_size=32, num_heads=4, window_size=0), "window_size"),
    (lnn.SlidingWindowAttention, dict(hidden_size=32, num_heads=5, window_size=4), "num_heads"),
    (lnn.SlidingWindowAttention, dict(hidden_size=32, num_heads=4, window_size=4, rope_theta=-1.0), "rope_theta"),
    (lnn.ShortConvolution, dict(hidden_size=32, kernel_size=4, activation="relu"), "activation"),
    (lnn.ShortConvolution, dict(hidden_size=32, kernel_size=0), "kernel_size"),
]


@pytest.mark.parametrize("cls, kwargs, argument", BAD_ARGUMENTS,
                         ids=[f"{cls.__name__}-{argument}-{i}" for i, (cls, _, argument) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_raise_one_line_naming_them(cls, kwargs, argument):
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    message = str(error.value)
    assert argument in message and "\n" not in message and message.startswith(cls.__name__)


# ---------------------------------------------------------------------------------------------
# fla's outputs (scripts/make_fla_layer_fixtures.py)

def fixture_cases():
    with open(os.path.join(FIXTURES, "cases.json")) as file:
        return json.load(file)["cases"]


@pytest.mark.parametrize("case", sorted(fixture_cases()))
def test_fla_state_dict_loads_unchanged_and_matches_flas_output(case):
    from safetensors.torch import load_file
    spec = fixture_cases()[case]
    tensors = load_file(os.path.join(FIXTURES, f"{case}.safetensors"))
    prefix = "state_dict."
    state_dict = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    layer = getattr(lnn, spec["class"])(**spec["kwargs"])
    layer.load_state_dict(state_dict)  # strict: the same names and shapes as fla's
    with torch.no_grad():
        output = layer(tensors["input"])
    assert output.dtype == torch.float32
    assert relative_error(output, tensors["output"]) < 1e-5
