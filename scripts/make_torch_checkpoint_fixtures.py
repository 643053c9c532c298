#!/usr/bin/env python3
"""Writes tests/fixtures/torch_checkpoint: small state dicts saved by torch.save (zip format) as
PyTorch checkpoints ship (pytorch_model.bin, and two shards with pytorch_model.bin.index.json),
and expected.safetensors holding the same tensors, for lintime's .bin reader tests. The tensors
cover float32 / bfloat16 / float16 / int64, a tensor sharing storage with another (tied weights),
a non-contiguous view and a 0-dim tensor. Run with torch and safetensors installed (the
virtualenv of scripts/make_hf_parity_fixtures.py):

  /tmp/hf/bin/python scripts/make_torch_checkpoint_fixtures.py tests/fixtures/torch_checkpoint
"""
import collections
import json
import os
import sys

import torch
from safetensors.torch import save_file


class RunsCode:
    """Unpickling calls os.system: a reader that runs pickled calls would execute it."""

    def __reduce__(self):
        return (os.system, ("echo a pickle ran code",))


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(11, 6, generator=generator)
    state = collections.OrderedDict()
    state["model.embed.weight"] = embed
    state["lm_head.weight"] = embed                      # tied: the same storage twice
    state["layers.0.proj.weight"] = torch.randn(5, 6, generator=generator).to(torch.bfloat16)
    state["layers.0.norm.weight"] = torch.rand(6, generator=generator).to(torch.float16)
    state["layers.0.conv.weight"] = torch.randn(6, 4, generator=generator).t()  # non-contiguous view
    state["step"] = torch.tensor(1234, dtype=torch.int64)
    # What Module.state_dict() attaches (pickled as the OrderedDict's attributes, after its items).
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("layers.0", {"version": 2})])
    torch.save(state, os.path.join(out_dir, "pytorch_model.bin"))
    names = list(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[:3], "pytorch_model-00002-of-00002.bin": names[3:]}
    os.makedirs(os.path.join(out_dir, "sharded"), exist_ok=True)
    for shard, keys in shards.items():
        torch.save(collections.OrderedDict((k, state[k]) for k in keys), os.path.join(out_dir, "sharded", shard))
    with open(os.path.join(out_dir, "sharded", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}, f, indent=1)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, os.path.join(out_dir, "expected.safetensors"))
    torch.save({"model": state}, os.path.join(out_dir, "nested.bin"))  # not a flat state dict
    torch.save({"w": embed, "evil": RunsCode()}, os.path.join(out_dir, "runs_code.bin"))  # must be refused
    print("wrote", out_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/torch_checkpoint")
