"""The sparse step: row-wise Adagrad with a group-lasso shrink for embedding rows, and
FTRL-Proximal with a per-row L1 for the wide weights. Only the rows a batch touched move.

Why not ``torch.optim.SparseAdam`` / sparse ``Adagrad``: those take a sparse gradient of the
whole table and coalesce it every step, which costs several times a plain sparse SGD step on
CPU. Here the rows are gathered once (``ESMM.gather``), their gradients come out dense over
just those rows, and the update is a handful of vector ops on them (one accumulator per row,
as FBGEMM's row-wise Adagrad does).

FTRL-Proximal per coordinate (McMahan et al. 2013), with ``λ1`` the row's L1 strength:

    n' = n + g²;  σ = (√n' − √n) / α;  z' = z + g − σ·w
    w' = 0                                   if |z'| ≤ λ1
    w' = −(z' − sign(z')·λ1) / ((β + √n') / α + λ2)   otherwise

>>> state = torch.zeros(1), torch.zeros(1)
>>> w, z, n = ftrl(torch.zeros(1), torch.tensor([0.5]), *state, l1=torch.tensor([0.2]),
...                alpha=0.1, beta=1.0, l2=0.0)
>>> round(w.item(), 6)  # z' = 0.5, w' = -(0.5 - 0.2) / ((1 + 0.5) / 0.1)
-0.02
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from trainer.admission import AdmissionRule
from trainer.model import Gathered, SparseTables
from trainer.vocab import PADDING_ROW, Vocabulary

EPS = 1e-8


def ftrl(
    w: torch.Tensor,
    g: torch.Tensor,
    z: torch.Tensor,
    n: torch.Tensor,
    l1: torch.Tensor,
    alpha: float,
    beta: float,
    l2: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FTRL-Proximal step; returns (w', z', n')."""
    n_new = n + g * g
    sigma = (n_new.sqrt() - n.sqrt()) / alpha
    z_new = z + g - sigma * w
    denominator = (beta + n_new.sqrt()) / alpha + l2
    w_new = torch.where(
        z_new.abs() <= l1, torch.zeros_like(z_new), -(z_new - z_new.sign() * l1) / denominator
    )
    return w_new, z_new, n_new


def group_lasso(rows: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Shrink each row's norm by ``strength`` (rows whose norm is below it become zero).

    >>> group_lasso(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.tensor([1.0, 1.0])).tolist()
    [[2.4000000953674316, 3.200000047683716], [0.0, 0.0]]
    """
    norm = rows.norm(dim=1)
    factor = torch.clamp(1.0 - strength / norm.clamp(min=EPS), min=0.0)
    return rows * factor.unsqueeze(1)


class SparseOptimizer:
    """Optimizer state per row of ``SparseTables`` (grows with it)."""

    def __init__(
        self, tables: SparseTables, lr: float, alpha: float, beta: float, l2: float
    ) -> None:
        self.lr, self.alpha, self.beta, self.l2 = lr, alpha, beta, l2
        self.accumulator = torch.zeros(tables.capacity)
        self.z = torch.zeros(tables.capacity, tables.wide.shape[1])
        self.n = torch.zeros(tables.capacity, tables.wide.shape[1])
        self.row_l1 = torch.zeros(tables.capacity)

    def fit_to(self, tables: SparseTables) -> None:
        grow = tables.capacity - self.accumulator.shape[0]
        if grow > 0:
            self.accumulator = torch.cat([self.accumulator, torch.zeros(grow)])
            self.z = torch.cat([self.z, torch.zeros(grow, self.z.shape[1])])
            self.n = torch.cat([self.n, torch.zeros(grow, self.n.shape[1])])
            self.row_l1 = torch.cat([self.row_l1, torch.zeros(grow)])

    def reset_rows(self, rows: list[int]) -> None:
        if rows:
            index = torch.tensor(rows, dtype=torch.long)
            self.accumulator[index] = 0.0
            self.z[index] = 0.0
            self.n[index] = 0.0

    def refresh_l1(self, vocab: Vocabulary, rules: Mapping[str, AdmissionRule]) -> None:
        """Each row's L1 strength from its vocabulary's rule and its count so far."""
        strength = np.zeros(self.row_l1.shape[0])
        for name, entries in vocab.vocabs.items():
            rule = rules[name]
            strength[entries.default_row] = rule.l1
            if entries.rows:
                rows = np.fromiter(entries.rows.values(), dtype=np.int64)
                freq = np.fromiter((entries.count[v] for v in entries.rows), dtype=np.float64)
                strength[rows] = rule.l1_of(freq)
        self.row_l1 = torch.from_numpy(strength.astype(np.float32))

    def step(self, tables: SparseTables, gathered: Gathered, scale: float) -> None:
        """Apply the gathered rows' gradients (``scale`` turns a batch mean into a sum)."""
        assert gathered.embedding.grad is not None and gathered.wide.grad is not None
        # The padding row never moves. ``rows`` is sorted, so it can only come first: a
        # slice (views) instead of a mask (copies). Gathers and scatters by index_select /
        # index_copy_, several times cheaper than indexing with a tensor.
        first = 1 if len(gathered.rows) and int(gathered.rows[0]) == PADDING_ROW else 0
        rows = gathered.rows[first:]
        g_emb = gathered.embedding.grad[first:] * scale
        g_wide = gathered.wide.grad[first:] * scale
        emb = gathered.embedding.detach()[first:]
        wide = gathered.wide.detach()[first:]
        l1 = self.row_l1.index_select(0, rows)

        accumulator = self.accumulator.index_select(0, rows) + g_emb.pow(2).mean(dim=1)
        self.accumulator.index_copy_(0, rows, accumulator)
        step = self.lr / (accumulator.sqrt() + EPS)
        emb = emb - step.unsqueeze(1) * g_emb
        if bool((l1 > 0).any()):
            emb = group_lasso(emb, step * l1)
        tables.embedding.index_copy_(0, rows, emb)

        w, z, n = ftrl(
            wide,
            g_wide,
            self.z.index_select(0, rows),
            self.n.index_select(0, rows),
            l1.unsqueeze(1),
            self.alpha,
            self.beta,
            self.l2,
        )
        tables.wide.index_copy_(0, rows, w)
        self.z.index_copy_(0, rows, z)
        self.n.index_copy_(0, rows, n)
