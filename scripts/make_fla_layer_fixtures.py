#!/usr/bin/env python3
"""Writes the fla layer fixtures of lintime.nn (tests/python/test_nn.py): for each case one
<case>.safetensors holding fla's layer weights ("state_dict.<name>", as fla names them), a fixed
input "input" [2, 12, 32] float32 and fla's output "output" on it; cases.json gives each case's
lintime.nn class and constructor arguments (the same as fla's).

Cases (hidden 32, 4 heads):
  gsa             GatedSlotAttention, 2 kv heads, 8 slots, swish feature map;
  gsa_conv_t2r    short convolutions with bias, the t2r feature map, no g_norm weight, scale None;
  gla             GatedLinearAttention, 2 kv heads, the fused g_norm + swish output gate;
  gla_conv_relu   short convolutions, relu feature map, no output gate, clamp_min;
  gla_unfused     fuse_norm=False with gate_fn sigmoid (g_norm, then · sigmoid(g_proj x));
  based_parallel  BasedLinearAttention, feature_dim 8, mode "parallel" (fla's scale=1);
  based_chunk     the same in mode "chunk" (fla's TaylorFeatureMap);
  swa             fla's softmax Attention with window_size 4, 2 kv heads, qkv_bias, qk_norm, RoPE.

fla's kernels are Triton; this script runs fla's layer classes on the CPU with them swapped for
torch equivalents of the same math (make_fla_parity_fixtures.patch_triton_kernels and
patch_flash_attention: fla's naive_recurrent_gsa / naive_recurrent_gla, plain torch for the norms,
convolution, RoPE and flash_attn), plus, here, FusedRMSNormGated (norm, weight, then · swish(g)),
fla's sigmoid activation, naive_parallel_based and naive_recurrent_linear_attn for BASED.
Weights are drawn as make_fla_parity_fixtures.trained_magnitudes does (norm weights in
[0.5, 2], others N(0, 1/fan_in)).

  PYTHONPATH=/path/to/flash-linear-attention .venv/bin/python scripts/make_fla_layer_fixtures.py \
      tests/fixtures/fla_layers
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fla_parity_fixtures as parity  # noqa: E402

HIDDEN = 32
CASES = {
    "gsa": ("GatedSlotAttention", dict(hidden_size=HIDDEN, num_heads=4, num_kv_heads=2, num_slots=8)),
    "gsa_conv_t2r": ("GatedSlotAttention", dict(hidden_size=HIDDEN, num_heads=4, num_slots=8, use_short_conv=True,
                                                conv_size=4, conv_bias=True, feature_map="t2r",
                                                elementwise_affine=False, scale=None, gate_logit_normalizer=16)),
    "gla": ("GatedLinearAttention", dict(hidden_size=HIDDEN, num_heads=4, num_kv_heads=2)),
    "gla_conv_relu": ("GatedLinearAttention", dict(hidden_size=HIDDEN, num_heads=4, feature_map="relu",
                                                   use_output_gate=False, use_short_conv=True, clamp_min=-0.05)),
    "gla_unfused": ("GatedLinearAttention", dict(hidden_size=HIDDEN, num_heads=4, fuse_norm=False,
                                                 gate_fn="sigmoid", gate_low_rank_dim=8)),
    "based_parallel": ("BasedLinearAttention", dict(hidden_size=HIDDEN, feature_dim=8, num_heads=4,
                                                    num_key_value_heads=4, mode="parallel")),
    "based_chunk": ("BasedLinearAttention", dict(hidden_size=HIDDEN, feature_dim=8, num_heads=4,
                                                 num_key_value_heads=4, mode="chunk")),
    "swa": ("SlidingWindowAttention", dict(hidden_size=HIDDEN, num_heads=4, num_kv_heads=2, qkv_bias=True,
                                           qk_norm=True, window_size=4, rope_theta=10000.)),
}


def patch_more_kernels():
    """The Triton pieces that make_fla_parity_fixtures does not swap."""
    import fla.layers.based as based_layer
    import fla.modules.activations as activations
    from fla.modules.fused_norm_gate import FusedRMSNormGated
    from fla.ops.based.naive import naive_parallel_based
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn

    def rms_norm_gated_forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
        assert residual is None and not prenorm and self.activation in ("swish", "silu")
        y = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        return (y * F.silu(g.float())).to(x.dtype)

    def parallel_based(q, k, v, scale=None, use_norm=True, **_):
        # fla's layer passes [B, T, H, D]; the naive form takes [B, H, T, D].
        o = naive_parallel_based(*(x.transpose(1, 2) for x in (q, k, v)), scale=scale, use_norm=use_norm)
        return o.transpose(1, 2)

    def chunk_linear_attn(q, k, v, scale=None, normalize=True, **_):
        return naive_recurrent_linear_attn(q, k, v, scale=scale, normalize=normalize)

    FusedRMSNormGated.forward = rms_norm_gated_forward
    activations.ACT2FN["sigmoid"] = torch.sigmoid
    based_layer.parallel_based = parallel_based
    based_layer.chunk_linear_attn = chunk_linear_attn


def build_fla_layer(class_name, kwargs):
    if class_name == "GatedSlotAttention":
        from fla.layers.gsa import GatedSlotAttention
        return GatedSlotAttention(layer_idx=0, **kwargs)
    if class_name == "GatedLinearAttention":
        from fla.layers.gla import GatedLinearAttention
        return GatedLinearAttention(layer_idx=0, **kwargs)
    if class_name == "BasedLinearAttention":
        from fla.layers.based import BasedLinearAttention
        return BasedLinearAttention(**kwargs)
    from fla.layers.attn import Attention
    return Attention(layer_idx=0, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    arguments = parser.parse_args()
    os.makedirs(arguments.folder, exist_ok=True)
    parity.patch_triton_kernels()
    parity.patch_flash_attention()
    patch_more_kernels()
    import fla

    generator = torch.Generator().manual_seed(20240611)
    for name, (class_name, kwargs) in CASES.items():
        torch.manual_seed(0)
        layer = build_fla_layer(class_name, kwargs).float().eval()
        parity.trained_magnitudes(layer, generator)
        if class_name == "BasedLinearAttention":
            # Smaller q, k keep the Taylor scores (1 + a + a²/2 with a = q·k) near softmax's range.
            with torch.no_grad():
                layer.q_proj.weight.mul_(0.5)
                layer.k_proj.weight.mul_(0.5)
        x = torch.randn(2, 12, HIDDEN, generator=generator)
        with torch.no_grad():
            output = layer(x)
        output = output[0] if isinstance(output, tuple) else output
        tensors = {f"state_dict.{key}": value.contiguous() for key, value in layer.state_dict().items()}
        tensors.update(input=x, output=output.contiguous())
        save_file(tensors, os.path.join(arguments.folder, f"{name}.safetensors"))
        print(f"{name}: {class_name} output rms {output.square().mean().sqrt().item():.3g}")
    config = {"fla": fla.__version__, "kernels": "torch equivalents on the CPU (see scripts/make_fla_layer_fixtures.py)",
              "cases": {name: {"class": class_name, "kwargs": kwargs} for name, (class_name, kwargs) in CASES.items()}}
    with open(os.path.join(arguments.folder, "cases.json"), "w") as file:
        json.dump(config, file, indent=1)
        file.write("\n")


if __name__ == "__main__":
    main()
