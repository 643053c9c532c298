#!/usr/bin/env python3
"""Writes the fla parity fixtures of lintime's GSA and GLA models: for each case a tiny random
model folder built and saved by fla's GSAForCausalLM or GLAForCausalLM (config.json +
model.safetensors) and expected.safetensors with
  input_ids     [B, T] int64, fixed ids;
  logits        [B, T, V] float32, fla's forward on input_ids;
  continuation  [B, 24] int64, greedy tokens after input_ids (one full forward per token);
  margin        [B, 24] float32, best minus second-best logit per step (the script insists on
                > 1e-3 so that greedy decoding cannot hinge on rounding).
Cases (hidden 64, 2 layers, 4 heads, intermediate 128, vocab 256, fuse_* off):
  gsa            current layout with grouped-query heads and an untied head;
  gsa_legacy     gsa's weights rewritten in the legacy layout (attn.norm / mlp.norm, gate_proj
                 [2I, d] gate rows first, "norm_first": true), which must give the same logits;
  gsa_tied_conv  a tied head with short convolutions, the relu feature map and a weightless
                 g_norm (as gsa-2.7B);
  gsa_hybrid     gsa with layer 0 made softmax attention by fla's hybrid "attn" (4 heads, 2 kv
                 heads, RoPE, a sliding window of 8 keys, shorter than the 16 + 24 tokens);
  gla            GLA with an untied head and the swish output gate (g_norm, then * swish(g));
  gla_hybrid     GLA with a tied head, no output gate, and layer 1 softmax attention (4 heads,
                 2 kv heads, no window);
  gla_relu       GLA as the GSA paper adapts it for T2R: ReLU feature map on q and k, no output
                 gate, a tied head.

fla's kernels are Triton. The gsa, gsa_legacy and gsa_tied_conv expectations come from
`--device cuda` on an H100: fla unpatched, its Triton kernels in float32 (expected.json says
"kernels": "triton"). On a machine without a GPU the script runs fla's model classes with those
kernels swapped for torch equivalents of the same math: fla's own naive_recurrent_gsa and
naive_recurrent_gla for the GSA and GLA ops, rotary_embedding_ref for RoPE, and plain torch for
swish, SwiGLU, RMSNorm (GLA's g_norm), the fused g_norm + o_proj (fla's default eps 1e-5) and the
short convolution. Both write the same weights (drawn on the CPU); for the GSA cases their logits
differ by 5.1e-7 relative RMS and their greedy continuations are identical. The gsa_hybrid, gla,
gla_hybrid and gla_relu expectations come from the CPU path (expected.json says so).

fla's softmax-attention layer (fla.layers.attn.Attention) calls flash_attn's flash_attn_func;
flash_attn is not among fla's requirements and not installed here, so in both modes (cpu and
cuda) the script hands fla `attention` below instead: causal softmax attention in float32 over
[B, T, H, D], grouped kv heads repeated, flash_attn's window_size = (window - 1, 0) as fla passes
it (each query sees itself and the window - 1 keys before it).

  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install transformers safetensors einops
  PYTHONPATH=path/to/flash-linear-attention /tmp/hf/bin/python scripts/make_fla_parity_fixtures.py \
      tests/fixtures/fla_parity [--cases gla gla_hybrid]
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import parity_fixtures


def attention(q, k, v, causal=True, window_size=(-1, -1), softmax_scale=None, **_):
    """flash_attn_func's causal softmax attention in float32 torch: q [B, T, H, D], k and v
    [B, S, H_kv, D] with H a multiple of H_kv; window_size = (left, 0) lets query i see keys
    i - left .. i (fla passes (window - 1, 0)); queries align to the last keys as in flash_attn."""
    assert causal and window_size[1] in (-1, 0)
    groups = q.shape[2] // k.shape[2]
    k, v = (x.repeat_interleave(groups, dim=2).float() for x in (k, v))
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    scores = torch.einsum("bthd,bshd->bhts", q.float() * scale, k)  # [B, H, T, S]
    query = torch.arange(q.shape[1], device=q.device)[:, None] + k.shape[1] - q.shape[1]
    key = torch.arange(k.shape[1], device=q.device)[None, :]
    allowed = key <= query
    if window_size[0] >= 0:
        allowed = allowed & (key >= query - window_size[0])
    probabilities = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshd->bthd", probabilities, v).to(q.dtype)


def patch_flash_attention():
    import fla.layers.attn as attn_layer
    attn_layer.flash_attn_func = attention


def patch_triton_kernels():
    import fla.layers.gla as gla_layer
    import fla.layers.gsa as gsa_layer
    import fla.modules.activations as activations
    import fla.modules.feature_map as feature_map
    import fla.modules.mlp as mlp
    import fla.modules.rotary as rotary
    from fla.modules import RMSNorm
    from fla.modules.conv.short_conv import ShortConvolution
    from fla.modules.rotary import rotary_embedding_ref
    from fla.ops.gla.naive import naive_recurrent_gla
    from fla.ops.gsa.naive import naive_recurrent_gsa

    def gsa_op(q, k, v, s, g, initial_state=None, output_final_state=False, scale=None, cu_seqlens=None, **_):
        assert cu_seqlens is None
        return naive_recurrent_gsa(q, k, v, s, g, scale=scale, initial_state=initial_state,
                                   output_final_state=output_final_state)

    def rms_norm_linear(x, norm_weight, norm_bias, linear_weight, linear_bias, eps=1e-5, **_):
        y = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + eps)
        if norm_weight is not None:
            y = y * norm_weight.float()
        if norm_bias is not None:
            y = y + norm_bias.float()
        return F.linear(y.to(x.dtype), linear_weight, linear_bias)

    def short_conv_forward(self, x, residual=None, mask=None, cache=None, output_final_state=False,
                           cu_seqlens=None, **_):
        assert residual is None and mask is None and cu_seqlens is None and cache is None
        width = self.weight.shape[-1]
        y = F.conv1d(F.pad(x.transpose(1, 2), (width - 1, 0)), self.weight, self.bias, groups=x.shape[-1])
        if self.activation in ("silu", "swish"):
            y = F.silu(y)
        return y.transpose(1, 2), None

    def gla_op(q, k, v, gk=None, g=None, scale=None, initial_state=None, output_final_state=False,
               state_v_first=False, cu_seqlens=None, **_):
        assert scale is None and initial_state is None and cu_seqlens is None
        o, state = naive_recurrent_gla(q, k, v, gk if gk is not None else g, output_final_state=output_final_state)
        return o, (state.transpose(-1, -2) if state_v_first and state is not None else state)

    def rms_norm_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        assert residual is None and not prenorm
        y = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    def rotary_forward(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None, **_):
        assert isinstance(seqlen_offsets, int) and cu_seqlens is None
        positions = slice(seqlen_offsets, seqlen_offsets + x.shape[1])
        return rotary_embedding_ref(x, cos[positions], sin[positions], interleaved)

    gsa_layer.fused_recurrent_gsa = gsa_op
    gsa_layer.chunk_gsa = gsa_op
    gsa_layer.rms_norm_linear = rms_norm_linear
    feature_map.swish = F.silu
    activations.ACT2FN.update(silu=F.silu, swish=F.silu)
    mlp.swiglu = lambda gate, up: F.silu(gate) * up
    ShortConvolution.forward = short_conv_forward
    gla_layer.fused_recurrent_gla = gla_op
    gla_layer.fused_chunk_gla = gla_op
    gla_layer.chunk_gla = gla_op
    RMSNorm.forward = rms_norm_forward
    rotary.rotary_embedding = rotary_forward


# name: (fla model family, config keys beyond COMMON and the family's)
CASES = {
    "gsa": ("gsa", dict(num_heads=4, num_kv_heads=2, tie_word_embeddings=False)),
    "gsa_tied_conv": ("gsa", dict(num_heads=4, num_kv_heads=None, tie_word_embeddings=True, use_short_conv=True,
                                  conv_size=4, feature_map="relu", elementwise_affine=False,
                                  gate_logit_normalizer=16)),
    "gsa_hybrid": ("gsa", dict(num_heads=4, num_kv_heads=2, tie_word_embeddings=False,
                               attn={"layers": [0], "num_heads": 4, "num_kv_heads": 2, "window_size": 8})),
    "gla": ("gla", dict(num_heads=4, tie_word_embeddings=False, use_output_gate=True)),
    "gla_hybrid": ("gla", dict(num_heads=4, tie_word_embeddings=True, use_output_gate=False,
                               attn={"layers": [1], "num_heads": 4, "num_kv_heads": 2})),
    "gla_relu": ("gla", dict(num_heads=4, tie_word_embeddings=True, use_output_gate=False, feature_map="relu")),
}
COMMON = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
              norm_eps=1e-6, fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False)
FAMILY = {"gsa": dict(num_slots=16), "gla": dict()}


def trained_magnitudes(model, generator):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.copy_(0.5 + 1.5 * torch.rand(parameter.shape, generator=generator))
            elif "embeddings" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            elif parameter.dim() == 3:  # short-convolution kernels [D, 1, W]
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)


def write_expected(folder, input_ids, logits, continuation, margin, device, family="gsa", hybrid=False):
    import fla
    import transformers
    versions = {"fla": fla.__version__, "transformers": transformers.__version__,
                "kernels": "triton" if device == "cuda" else f"torch equivalents (naive_recurrent_{family})"}
    if hybrid:
        versions["attention"] = "torch equivalent of flash_attn_func (float32)"
    parity_fixtures.write_expected(folder, input_ids, logits, continuation, margin, versions)


def to_legacy(source, target, intermediate):
    """fla's mid-2024 layout of the same weights: attn.norm / mlp.norm, fused gate_proj."""
    os.makedirs(target, exist_ok=True)
    tensors = load_file(os.path.join(source, "model.safetensors"))
    legacy = {}
    for name, tensor in tensors.items():
        if name.endswith("mlp.up_proj.weight"):
            continue
        if name.endswith("mlp.gate_proj.weight"):
            up = tensors[name.replace("gate_proj", "up_proj")]
            assert up.shape[0] == intermediate
            legacy[name] = torch.cat([tensor, up], 0).contiguous()
            continue
        legacy[name.replace("attn_norm", "attn.norm").replace("mlp_norm", "mlp.norm")] = tensor
    save_file(legacy, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    config["norm_first"] = True
    with open(os.path.join(target, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", nargs="?", default="tests/fixtures/fla_parity")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    patch_flash_attention()
    if args.device == "cpu":
        patch_triton_kernels()
    from fla.models import GLAConfig, GLAForCausalLM, GSAConfig, GSAForCausalLM
    models = {"gsa": (GSAConfig, GSAForCausalLM), "gla": (GLAConfig, GLAForCausalLM)}
    for _, model_class in models.values():
        if isinstance(model_class._tied_weights_keys, list):  # fla 0.5's spelling; transformers 5 wants a map
            model_class._tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    for name in args.cases:
        family, case = CASES[name]
        config_class, model_class = models[family]
        generator = torch.Generator().manual_seed(4321)
        config = config_class(**COMMON, **FAMILY[family], **case)
        model = model_class(config).float().eval()
        trained_magnitudes(model, generator)
        tied = model.lm_head.weight.data_ptr() == model.model.embeddings.weight.data_ptr()
        assert tied == config.tie_word_embeddings, f"{name}: lm_head tied {tied}, config says {config.tie_word_embeddings}"
        model.to(args.device)
        input_ids = torch.randint(0, config.vocab_size, (2, 16), generator=generator).to(args.device)
        with torch.no_grad():
            logits = model(input_ids).logits.float()
            continuation, margin = parity_fixtures.greedy(model, input_ids)
        assert margin.min() > 1e-3, f"{name}: a greedy step is nearly tied ({margin.min():.2e}), change the seed"
        folder = os.path.join(args.out_dir, name)
        # save_pretrained's weights, written directly: transformers 5 trips over fla 0.5's list
        # of tied keys. A tied head is not stored, as in fla's checkpoints.
        os.makedirs(folder, exist_ok=True)
        config.save_pretrained(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                 if not (config.tie_word_embeddings and k == "lm_head.weight")}
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        write_expected(folder, input_ids, logits, continuation, margin, args.device, family, config.attn is not None)
        print(f"{name}: logits {tuple(logits.shape)}, min greedy margin {margin.min():.3g}")
        if name == "gsa":
            legacy = os.path.join(args.out_dir, "gsa_legacy")
            to_legacy(folder, legacy, config.intermediate_size)
            write_expected(legacy, input_ids, logits, continuation, margin, args.device)
            print("gsa_legacy: the same weights in the legacy layout")


if __name__ == "__main__":
    main()
