"""Helpers shared by the parity-fixture scripts (make_hf_parity_fixtures.py,
make_fla_parity_fixtures.py): greedy continuations with their top-two margins, and the
expected.safetensors + expected.json they write beside each model folder."""
import json
import os

import torch
from safetensors.torch import save_file

STEPS = 24


def greedy(model, input_ids, steps=STEPS):
    """Greedy tokens after input_ids, one full forward per token, and the gap between the best
    and the second-best logit at each step."""
    ids, margins = input_ids, []
    for _ in range(steps):
        logits = model(ids).logits[:, -1].float()
        top = logits.topk(2, dim=-1).values
        margins.append(top[:, 0] - top[:, 1])
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    return ids[:, input_ids.shape[1]:], torch.stack(margins, 1)


def write_expected(folder, input_ids, logits, continuation, margin, versions):
    save_file({"input_ids": input_ids.cpu().contiguous(), "logits": logits.cpu().contiguous(),
               "continuation": continuation.cpu().contiguous(), "margin": margin.cpu().contiguous()},
              os.path.join(folder, "expected.safetensors"))
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump({**versions, "torch": torch.__version__, "min_margin": float(margin.min())}, f, indent=1)
