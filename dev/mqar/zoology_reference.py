"""The GSA paper's MQAR run written the way zoology and the authors' sweep script build it, in
PyTorch, with the GSA op taken from fla (FLA_PATH) or from lintime's registered op (--library):
the same model and trainer around either op, to tell an op difference from a protocol one.

Model: token embedding (N(0, 0.02), dropout 0.1), n pre-norm blocks (LayerNorm -> GSA mixer ->
residual, then the identity state mixer's LayerNorm added to the residual, as zoology's
TransformerBlock does), final LayerNorm, tied head. GSA mixer as fla's GatedSlotAttention:
swish q/k/v, logsigmoid(f)/normaliser slot gates, SiLU, RMSNorm over the value width, o_proj.
Trainer: AdamW over all parameters (wd 0.1), per-epoch cosine, no clipping, fp32.
Data: zoology's multiquery_ar (numpy, not lintime's generator: the same distribution, other
draws); the values of the query region are labels only, never inputs.

  python3 dev/mqar/zoology_reference.py --gsa fla|lintime [--library .device/liblintime_ops.so]
      [--d-model 128] [--lr 1e-3] [--max-seconds 500] --jsonl OUT
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def mqar_batch(rng, batch, seq_len=512, pairs=64, vocab=8192, power_a=0.01):
    half = vocab // 2
    keys = rng.random((batch, half - 1)).argsort(1)[:, :pairs] + 1
    values = rng.random((batch, half)).argsort(1)[:, :pairs] + half
    slots = (seq_len - 2 * pairs) // 2
    log_p = (power_a - 1) * np.log(np.arange(1, slots + 1))
    gumbel = -np.log(-np.log(rng.random((batch, slots))))
    gaps = np.argsort(-(log_p + gumbel), axis=1)[:, :pairs]  # without replacement, ∝ p
    seq = np.zeros((batch, seq_len + 1), dtype=np.int64)
    seq[:, 0:2 * pairs:2] = keys
    seq[:, 1:2 * pairs:2] = values
    rows = np.arange(batch)[:, None]
    positions = 2 * pairs + 2 * gaps
    seq[rows, positions] = keys  # as zoology: the query region holds the keys only
    inputs = seq[:, :seq_len]
    labels = np.full((batch, seq_len), -100, dtype=np.int64)
    labels[rows, positions] = values
    return torch.from_numpy(inputs), torch.from_numpy(labels)


class GsaMixer(nn.Module):
    def __init__(self, d, heads, slots, normaliser, gsa_op):
        super().__init__()
        self.heads, self.slots, self.normaliser, self.gsa_op = heads, slots, normaliser, gsa_op
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.f_proj = nn.Linear(d, heads * slots, bias=False)
        self.g_norm_weight = nn.Parameter(torch.ones(d))
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, T, d = x.shape
        head_dim = d // self.heads
        q = F.silu(self.q_proj(x)).view(B, T, self.heads, head_dim)
        k = F.silu(self.k_proj(x)).view(B, T, self.heads, head_dim)
        v = F.silu(self.v_proj(x)).view(B, T, self.heads, head_dim)
        g = F.logsigmoid(self.f_proj(x).view(B, T, self.heads, self.slots)) / self.normaliser
        s = 1 - g.exp()
        o = self.gsa_op(q, k, v, s, g, head_dim ** -0.5)
        o = F.silu(o.reshape(B, T, d))
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * self.g_norm_weight
        return self.o_proj(o)


class Model(nn.Module):
    def __init__(self, vocab, d, layers, heads, slots, normaliser, gsa_op):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.norm1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.mixers = nn.ModuleList(GsaMixer(d, heads, slots, normaliser, gsa_op) for _ in range(layers))
        self.norm2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, inputs):
        x = F.dropout(self.embedding(inputs), 0.1, self.training)
        for norm1, mixer, norm2 in zip(self.norm1, self.mixers, self.norm2):
            x = x + mixer(norm1(x))
            x = x + norm2(x)
        return self.ln_f(x) @ self.embedding.weight.T


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gsa", choices=["fla", "lintime"], required=True)
    parser.add_argument("--library", default=".device/liblintime_ops.so")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=500)
    parser.add_argument("--jsonl", required=True)
    args = parser.parse_args()

    if args.gsa == "fla":
        sys.path.insert(0, os.environ.get("FLA_PATH", ".fla"))
        from fla.ops.gsa import chunk_gsa
        gsa_op = lambda q, k, v, s, g, scale: chunk_gsa(q, k, v, s, g, scale=scale)[0]
    else:
        torch.ops.load_library(args.library)
        gsa_op = lambda q, k, v, s, g, scale: torch.ops.lintime.gsa_chunk(q, k, v, s, g, scale, None, None,
                                                                         False, None)[0]
    torch.manual_seed(args.seed)
    d = args.d_model
    model = Model(8192, d, 4, 4, d // 4, 16.0, gsa_op).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=0.0)
    test_rng = np.random.default_rng(10_000 + args.seed)
    test = [mqar_batch(test_rng, 125) for _ in range(24)]  # 3,000 examples
    train_rng = np.random.default_rng(args.seed)
    steps_per_epoch = 100_000 // 128
    out = open(args.jsonl, "w")
    start = time.time()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for _ in range(steps_per_epoch):
            inputs, labels = mqar_batch(train_rng, 128)
            logits = model(inputs.cuda())
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.cuda().view(-1), ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0:
                record = {"gsa": args.gsa, "step": step, "loss": loss.item(), "s": time.time() - start}
                out.write(json.dumps(record) + "\n")
                out.flush()
            if time.time() - start > args.max_seconds:
                break
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in test:
                predictions = model(inputs.cuda()).argmax(-1).cpu()
                mask = labels != -100
                correct += (predictions[mask] == labels[mask]).sum().item()
                total += mask.sum().item()
        record = {"gsa": args.gsa, "step": step, "epoch": epoch, "test_accuracy": correct / total,
                  "steps_per_s": step / (time.time() - start)}
        print(json.dumps(record), flush=True)
        out.write(json.dumps(record) + "\n")
        out.flush()
        if correct / total > 0.99 or time.time() - start > args.max_seconds:
            break
        scheduler.step()


if __name__ == "__main__":
    main()
