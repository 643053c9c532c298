"""Model folders as torch modules: any folder the `lintime` command runs (fla's GSA and GLA, Hugging
Face's Llama and Mistral, HazyResearch's BASED, lintime's own checkpoints), loaded by lintime's C++
architecture registry. For evaluation and generation: the weights are lintime's and gradients do
not flow through the model (training is `lintime train`)."""
import json
import os

import torch

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}


class LintimeModel(torch.nn.Module):
    """forward(input_ids [B, T] int64) -> logits [B, T, V]; prefill / step for decoding from the
    model's constant-size state (a KV cache for Transformers); generate for whole continuations."""

    def __init__(self, native, device, dtype):
        super().__init__()
        self.native = native
        self.device = device
        self.dtype = dtype
        self.config = json.loads(native.config_json())

    @property
    def name(self):
        return self.native.name()

    @property
    def vocab_size(self):
        return self.native.vocab_size()

    def forward(self, input_ids):
        return self.native.forward(self._ids(input_ids, "input_ids", 2))

    def prefill(self, input_ids, total_tokens=0):
        """Starts decoding from a prompt [B, T]; returns the last position's logits [B, V]."""
        return self.native.prefill(self._ids(input_ids, "input_ids", 2), int(total_tokens))

    def step(self, tokens):
        """Feeds one token per sequence [B]; returns the next logits [B, V]."""
        return self.native.step(self._ids(tokens, "tokens", 1))

    def generate(self, prompt, max_new_tokens=32, temperature=0.0, top_k=0, top_p=1.0, seed=0, eos_token_id=None):
        """Continues each prompt row [B, T]: temperature 0 is greedy; stops a row at eos_token_id
        (not kept). Returns one list of token ids per row."""
        eos = -1 if eos_token_id is None else int(eos_token_id)
        return [list(row) for row in self.native.generate(self._ids(prompt, "prompt", 2), int(max_new_tokens),
                                                          float(temperature), int(top_k), float(top_p), int(seed), eos)]

    def state_bytes_per_sequence(self, tokens=1024):
        """Bytes of decoding state one sequence holds after `tokens` tokens."""
        return self.native.state_bytes_per_sequence(int(tokens))

    def weights(self):
        """The parameters by their checkpoint names (shared with the model, not copies)."""
        return dict(self.native.parameters())

    def _ids(self, ids, what, dims):
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != dims:
            shape = "[B, T]" if dims == 2 else "[B]"
            got = f"{ids.dtype} {list(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"{what}: expected an int64 tensor {shape}, got {got}")
        return ids.to(self.device)

    def extra_repr(self):
        return f"{self.name}, device={self.device}, dtype={self.dtype}"


def load_model(model_dir, device="cpu", dtype=torch.float32, state_dtype=torch.float32):
    """The model of a folder (config.json and its weights) in `dtype` on `device`. state_dtype
    bfloat16 keeps recurrent decoding states (GSA, GLA, BASED) in bf16 between prefill and steps."""
    device = torch.device(device)
    if dtype not in _DTYPES:
        raise ValueError(f"load_model: dtype must be one of {', '.join(str(d) for d in _DTYPES)}, got {dtype}")
    if not os.path.isdir(model_dir):
        raise ValueError(f"load_model: '{model_dir}' is not a folder; expected a model folder with config.json")
    if state_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"load_model: state_dtype must be torch.float32 or torch.bfloat16, got {state_dtype}")
    native = torch.classes.lintime.Model(str(model_dir), str(device), _DTYPES[dtype])
    native.set_state_dtype(_DTYPES[state_dtype])
    return LintimeModel(native, device, dtype)
