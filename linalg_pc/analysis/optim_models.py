"""The two training tasks of the optimizer study (PyTorch): an MLP classifier on the digits and
a small character-level (byte-level) transformer language model on the stdlib corpus.

A :class:`Task` builds its model for a seed, draws training batches from a seeded generator and
evaluates on a fixed validation set, so two runs with the same seed see the same batches in the
same order whatever their optimizer. Data come from :mod:`.optim_data` (offline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .optim_data import digits, stdlib_corpus

__all__ = ["Task", "TaskConfig", "MLP", "CharTransformer", "make_task"]


@dataclass(frozen=True)
class TaskConfig:
    """Sizes of one task (the study's default and quick configurations pick these)."""

    name: str
    steps: int
    batch: int
    eval_every: int
    hidden: int = 128
    layers: int = 2
    context: int = 64
    heads: int = 4
    corpus_bytes: int | None = None
    val_batches: int = 8


class MLP(torch.nn.Module):
    """64 → hidden → … → 10 with GELU, ``layers`` hidden layers."""

    def __init__(self, n_in: int, hidden: int, n_out: int, layers: int):
        super().__init__()
        dims = [n_in] + [hidden] * layers
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.out = torch.nn.Linear(dims[-1], n_out)

    def forward(self, x):
        for lin in self.hidden:
            x = F.gelu(lin(x))
        return self.out(x)


class _Block(torch.nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, 4 * d)
        self.fc2 = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(torch.nn.Module):
    """A pre-LayerNorm GPT-style decoder over bytes (vocabulary 256), learned positions, an
    untied output layer."""

    def __init__(self, d: int, layers: int, heads: int, context: int, vocab: int = 256):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Parameter(torch.zeros(context, d))
        self.blocks = torch.nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab)
        for m in self.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=0.02)
                torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.Embedding):
                torch.nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:  # GPT-2's scaling of the residual projections
            for lin in (blk.proj, blk.fc2):
                torch.nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


class Task:
    """One training problem: ``model(seed)``, ``batch(gen)`` → (loss closure input), ``loss``,
    ``evaluate(model)`` → {"loss", "acc"?}; ``info`` describes the data."""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        if cfg.name == "digits":
            d = digits()
            self.x_train = torch.from_numpy(d["x_train"])
            self.y_train = torch.from_numpy(d["y_train"])
            self.x_val = torch.from_numpy(d["x_val"])
            self.y_val = torch.from_numpy(d["y_val"])
            self.info = dict(d["info"])
        elif cfg.name == "charlm":
            c = stdlib_corpus(max_bytes=cfg.corpus_bytes)
            self.train = torch.from_numpy(c["train"].astype(np.int64))
            self.val = torch.from_numpy(c["val"].astype(np.int64))
            g = torch.Generator().manual_seed(12345)  # the validation windows are fixed
            n = cfg.val_batches * cfg.batch
            starts = torch.randint(0, len(self.val) - cfg.context - 1, (n,), generator=g)
            self.val_windows = torch.stack([self.val[s:s + cfg.context + 1] for s in starts])
            self.info = dict(c["info"])
        else:
            raise ValueError(f"task must be 'digits' or 'charlm', got {cfg.name!r}")

    def model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        cfg = self.cfg
        if cfg.name == "digits":
            return MLP(int(self.x_train.shape[1]), cfg.hidden, 10, cfg.layers)
        return CharTransformer(cfg.hidden, cfg.layers, cfg.heads, cfg.context)

    def batch(self, gen: torch.Generator):
        cfg = self.cfg
        if cfg.name == "digits":
            i = torch.randint(0, len(self.y_train), (cfg.batch,), generator=gen)
            return self.x_train[i], self.y_train[i]
        s = torch.randint(0, len(self.train) - cfg.context - 1, (cfg.batch,), generator=gen)
        w = torch.stack([self.train[j:j + cfg.context + 1] for j in s.tolist()])
        return w[:, :-1], w[:, 1:]

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        out = model(x)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        model.eval()
        try:
            if self.cfg.name == "digits":
                out = model(self.x_val)
                return {"loss": float(F.cross_entropy(out, self.y_val)),
                        "acc": float((out.argmax(-1) == self.y_val).float().mean())}
            tot = 0.0
            for w in self.val_windows.split(self.cfg.batch):
                tot += float(self.loss(model, (w[:, :-1], w[:, 1:])))
            return {"loss": tot / self.cfg.val_batches}
        finally:
            model.train()


def make_task(cfg: TaskConfig) -> Task:
    """The :class:`Task` of a configuration (loads its data once)."""
    return Task(cfg)
