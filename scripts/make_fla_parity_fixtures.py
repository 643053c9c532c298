#!/usr/bin/env python3
"""Writes the fla parity fixtures of lintime's GSA model: for each case a tiny random model folder
built and saved by fla's GSAForCausalLM (config.json + model.safetensors) and expected.safetensors
with
  input_ids     [B, T] int64, fixed ids;
  logits        [B, T, V] float32, fla's forward on input_ids;
  continuation  [B, 24] int64, greedy tokens after input_ids (one full forward per token);
  margin        [B, 24] float32, best minus second-best logit per step (the script insists on
                > 1e-3 so that greedy decoding cannot hinge on rounding).
Cases: current layout with grouped-query heads and an untied head; a tied head with short
convolutions, the relu feature map and a weightless g_norm (as gsa-2.7B); and the first case's
weights rewritten in the legacy layout (attn.norm / mlp.norm, gate_proj [2I, d] gate rows first,
"norm_first": true), which must give the same logits.

fla's kernels are Triton. The committed expectations come from `--device cuda` on an H100: fla
unpatched, its Triton kernels in float32 (expected.json says "kernels": "triton"). On a machine
without a GPU the script runs fla's model classes with those kernels swapped for torch
equivalents of the same math: fla's own naive_recurrent_gsa for the GSA op, and plain torch for
swish, SwiGLU, the fused g_norm + o_proj (fla's default eps 1e-5) and the short convolution.
Both write the same weights (drawn on the CPU); their logits differ by 5.1e-7 relative RMS and
their greedy continuations are identical.

  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install transformers safetensors einops
  PYTHONPATH=path/to/flash-linear-attention /tmp/hf/bin/python scripts/make_fla_parity_fixtures.py \
      tests/fixtures/fla_parity
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import parity_fixtures


def patch_triton_kernels():
    import fla.layers.gsa as gsa_layer
    import fla.modules.feature_map as feature_map
    import fla.modules.mlp as mlp
    from fla.modules.conv.short_conv import ShortConvolution
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

    gsa_layer.fused_recurrent_gsa = gsa_op
    gsa_layer.chunk_gsa = gsa_op
    gsa_layer.rms_norm_linear = rms_norm_linear
    feature_map.swish = F.silu
    mlp.swiglu = lambda gate, up: F.silu(gate) * up
    ShortConvolution.forward = short_conv_forward


CASES = {
    "gsa": dict(num_heads=4, num_kv_heads=2, tie_word_embeddings=False),
    "gsa_tied_conv": dict(num_heads=4, num_kv_heads=None, tie_word_embeddings=True, use_short_conv=True,
                          conv_size=4, feature_map="relu", elementwise_affine=False, gate_logit_normalizer=16),
}
COMMON = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_slots=16, intermediate_size=128,
              norm_eps=1e-6, fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False)


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


def write_expected(folder, input_ids, logits, continuation, margin, device):
    import fla
    import transformers
    parity_fixtures.write_expected(folder, input_ids, logits, continuation, margin, {
        "fla": fla.__version__, "transformers": transformers.__version__,
        "kernels": "triton" if device == "cuda" else "torch equivalents (naive_recurrent_gsa)"})


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
    args = parser.parse_args()
    if args.device == "cpu":
        patch_triton_kernels()
    from fla.models import GSAConfig, GSAForCausalLM
    if isinstance(GSAForCausalLM._tied_weights_keys, list):  # fla 0.5's spelling; transformers 5 wants a map
        GSAForCausalLM._tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    for name, case in CASES.items():
        generator = torch.Generator().manual_seed(4321)
        config = GSAConfig(**COMMON, **case)
        model = GSAForCausalLM(config).float().eval()
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
        write_expected(folder, input_ids, logits, continuation, margin, args.device)
        print(f"{name}: logits {tuple(logits.shape)}, min greedy margin {margin.min():.3g}")
        if name == "gsa":
            legacy = os.path.join(args.out_dir, "gsa_legacy")
            to_legacy(folder, legacy, config.intermediate_size)
            write_expected(legacy, input_ids, logits, continuation, margin, args.device)
            print("gsa_legacy: the same weights in the legacy layout")


if __name__ == "__main__":
    main()
