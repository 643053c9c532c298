#!/usr/bin/env python3
"""Writes the Hugging Face parity fixtures of lintime's Llama / Mistral models: for each case a
tiny random model folder built and saved by `transformers` (config.json + model.safetensors) and
expected.safetensors with
  input_ids     [B, T] int64, fixed ids;
  logits        [B, T, V] float32, the transformers model's forward on input_ids;
  continuation  [B, 24] int64, greedy tokens after input_ids (one full forward per token, and
                checked equal to transformers' generate with its KV cache);
  margin        [B, 24] float32, the gap between the best and second-best logit at each step
                (ties would make greedy decoding depend on rounding: the script insists on > 1e-3).
The weights are drawn at trained-model magnitudes (projections ~ 1/sqrt(fan_in), embeddings of
norm ~ sqrt(d), norm gains in [0.5, 2]), not the initialiser's 0.02. Run once with transformers
installed (a throwaway virtualenv that sees a torch):

  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install transformers safetensors
  /tmp/hf/bin/python scripts/make_hf_parity_fixtures.py tests/fixtures/hf_parity
"""
import os
import sys

import torch
import transformers

import parity_fixtures

CASES = {
    # Llama 3 style: grouped-query heads, llama3 rope scaling, untied head, rope_theta 5e5.
    "llama": dict(
        cls="LlamaForCausalLM", config="LlamaConfig",
        kwargs=dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    max_position_embeddings=256, tie_word_embeddings=False,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=16),
                    rope_theta=500000.0)),
    # Mistral: a sliding window shorter than the sequence, tied embeddings, an explicit head_dim.
    "mistral": dict(
        cls="MistralForCausalLM", config="MistralConfig",
        kwargs=dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=24, sliding_window=7,
                    rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=True,
                    rope_theta=10000.0)),
}


def trained_magnitudes(model, generator):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                parameter.copy_(0.5 + 1.5 * torch.rand(parameter.shape, generator=generator))
            elif "embed_tokens" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            else:
                fan_in = parameter.shape[-1]
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in ** 0.5)


def main(out_dir):
    torch.manual_seed(0)
    for name, case in CASES.items():
        generator = torch.Generator().manual_seed(1234)
        config = getattr(transformers, case["config"])(**case["kwargs"])
        config._attn_implementation = "eager"
        model = getattr(transformers, case["cls"])(config).float().eval()
        trained_magnitudes(model, generator)
        input_ids = torch.randint(0, config.vocab_size, (2, 16), generator=generator)
        with torch.no_grad():
            logits = model(input_ids).logits.float()
            continuation, margin = parity_fixtures.greedy(model, input_ids)
            generated = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                       max_new_tokens=parity_fixtures.STEPS,
                                       do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(generated[:, input_ids.shape[1]:], continuation), f"{name}: generate differs"
        assert margin.min() > 1e-3, f"{name}: a greedy step is nearly tied ({margin.min():.2e}), change the seed"
        folder = os.path.join(out_dir, name)
        model.save_pretrained(folder, safe_serialization=True)
        parity_fixtures.write_expected(folder, input_ids, logits, continuation, margin,
                                       {"transformers": transformers.__version__})
        print(f"{name}: logits {tuple(logits.shape)}, min greedy margin {margin.min():.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hf_parity")
