"""ESMM over a shared embedding table; each tower a DFM with a user-interest module.

pCTR and pCVR come from two towers over the same embedding rows; pCTCVR = pCTR × pCVR. The
ESMM loss is BCE(pCTR, click) + BCE(pCTCVR, click · conversion) over all impressions (the
``separate`` objective instead trains the CVR tower on clicked impressions only, the classic
baseline ESMM was built to beat). Each tower adds up:

- wide: the first-order weights of every field's row (a column of ``SparseTables.wide``);
- FM: the second-order cross of the field embeddings, ½((Σv)² − Σv²);
- interest: attention of the target anchor over the user's recent anchors (DMR-style: a
  learned projection of the target against each item plus a position embedding), its
  output joining the FM fields and the MLP input;
- a residual MLP over every field embedding and the dense numeric values.

The embedding table and the wide weights live outside autograd (``SparseTables``): a step
gathers the rows a batch touches as leaf tensors, so gradients and updates cost the batch's
rows, not the table (``trainer.optim``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trainer.encode import Batch
from trainer.fields import FieldSpec
from trainer.vocab import PADDING_ROW

SCHEMA_VERSION = 1
TOWERS = ("ctr", "cvr")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored in the manifest)."""

    dim: int
    hidden: tuple[int, ...]
    single_fields: tuple[str, ...]
    sequence_fields: tuple[str, ...]
    sequence_lengths: tuple[int, ...]
    numeric_fields: tuple[str, ...]
    interest_sequence: int  # index into sequence_fields
    interest_target: int  # index into single_fields
    objective: str = "esmm"
    specs: tuple[FieldSpec, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def build(
        cls, specs: list[FieldSpec], dim: int, hidden: tuple[int, ...], interest: tuple[str, str],
        objective: str,
    ) -> ModelConfig:  # fmt: skip
        """From the field list; ``interest`` is (sequence field, target field)."""
        single = tuple(s.name for s in specs if s.kind != "sequence")
        sequences = [s for s in specs if s.kind == "sequence"]
        return cls(
            dim=dim,
            hidden=tuple(hidden),
            single_fields=single,
            sequence_fields=tuple(s.name for s in sequences),
            sequence_lengths=tuple(s.max_length for s in sequences),
            numeric_fields=tuple(s.name for s in specs if s.kind == "numeric"),
            interest_sequence=[s.name for s in sequences].index(interest[0]),
            interest_target=single.index(interest[1]),
            objective=objective,
            specs=tuple(specs),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_json``; a config from another schema version is refused."""
        data = dict(data)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"model schema_version {data.get('schema_version')!r} is not the "
                f"{SCHEMA_VERSION} this code reads"
            )
        for key in ("hidden", "single_fields", "sequence_fields", "sequence_lengths"):
            data[key] = tuple(data[key])
        data["numeric_fields"] = tuple(data["numeric_fields"])
        data["specs"] = tuple(
            FieldSpec(**{**spec, "boundaries": tuple(spec["boundaries"])}) for spec in data["specs"]
        )
        config = cls(**data)
        config.check()
        return config

    def check(self) -> None:
        """Raise ValueError when the parts of the config disagree with each other."""
        single = tuple(s.name for s in self.specs if s.kind != "sequence")
        sequences = tuple(s.name for s in self.specs if s.kind == "sequence")
        if single != self.single_fields or sequences != self.sequence_fields:
            raise ValueError("model config: the field list does not match its specs")
        if not 0 <= self.interest_sequence < len(sequences):
            raise ValueError("model config: interest_sequence out of range")
        if not 0 <= self.interest_target < len(single):
            raise ValueError("model config: interest_target out of range")


class SparseTables:
    """The embedding rows and the wide (first-order) weights of both towers, one row space."""

    def __init__(self, dim: int, capacity: int = 1024, seed: int = 7) -> None:
        self.dim = dim
        self.seed = seed
        self.embedding = torch.zeros(capacity, dim)
        self.wide = torch.zeros(capacity, len(TOWERS))

    @property
    def capacity(self) -> int:
        return int(self.embedding.shape[0])

    def ensure(self, rows: int) -> None:
        """Grow (doubling) so that rows ``[0, rows)`` exist."""
        if rows <= self.capacity:
            return
        capacity = self.capacity
        while capacity < rows:
            capacity *= 2
        grow = capacity - self.capacity
        self.embedding = torch.cat([self.embedding, torch.zeros(grow, self.dim)])
        self.wide = torch.cat([self.wide, torch.zeros(grow, len(TOWERS))])

    def init_rows(self, rows: list[int]) -> None:
        """Fresh values for newly given rows: small random embedding (seeded by row), zero wide."""
        if not rows:
            return
        index = torch.tensor(rows, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + rows[0])
        scale = 1.0 / math.sqrt(self.dim)
        values = torch.randn(len(rows), self.dim, generator=generator) * 0.1 * scale
        self.embedding[index] = values
        self.wide[index] = 0.0
        self.embedding[PADDING_ROW] = 0.0


class Interest(nn.Module):
    """Attention of the target item over a sequence of items (masked, with positions)."""

    def __init__(self, dim: int, length: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.position = nn.Parameter(torch.zeros(length, dim))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(
        self, target: torch.Tensor, items: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        keys = items + self.position[: items.shape[1]]
        scores = torch.einsum("bd,bld->bl", self.query(target), keys) * self.scale
        scores = scores.masked_fill(~mask, -1e9)
        weights = torch.softmax(scores, dim=1) * mask  # an empty sequence attends to nothing
        return torch.einsum("bl,bld->bd", weights, items)


class ResidualMLP(nn.Module):
    def __init__(self, inputs: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.blocks = nn.ModuleList()
        width = inputs
        for size in hidden:
            self.layers.append(nn.Linear(width, size))
            self.blocks.append(nn.Linear(size, size))
            width = size
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, block in zip(self.layers, self.blocks, strict=True):
            x = torch.relu(layer(x))
            x = x + torch.relu(block(x))
        out: torch.Tensor = self.out(x).squeeze(1)
        return out


class Tower(nn.Module):
    """One DFM tower: wide + FM + interest + residual MLP → a logit."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        length = config.sequence_lengths[config.interest_sequence]
        self.interest = Interest(config.dim, length)
        fields = len(config.single_fields) + len(config.sequence_fields) + 1
        self.mlp = ResidualMLP(fields * config.dim + len(config.numeric_fields), config.hidden)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(
        self,
        single: torch.Tensor,
        pooled: list[torch.Tensor],
        items: torch.Tensor,
        mask: torch.Tensor,
        dense: torch.Tensor,
        wide: torch.Tensor,
    ) -> torch.Tensor:
        target = single[:, self.config.interest_target]
        interest = self.interest(target, items, mask)
        fields = torch.cat([single, torch.stack([*pooled, interest], dim=1)], dim=1)
        total = fields.sum(dim=1)
        fm = 0.5 * (total.pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1)
        deep: torch.Tensor = self.mlp(torch.cat([fields.flatten(1), dense], dim=1))
        return self.bias + wide + fm + deep


@dataclass
class Gathered:
    """The rows one batch touches, as leaf tensors whose gradients the sparse step applies."""

    rows: torch.Tensor  # unique row ids
    embedding: torch.Tensor  # [U, D] requires grad
    wide: torch.Tensor  # [U, 2] requires grad
    inverse: torch.Tensor  # position in ``rows`` of every looked-up row


class ESMM(nn.Module):
    """Two towers over shared embeddings; ``forward`` returns (logit_ctr, logit_cvr)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.towers = nn.ModuleDict({name: Tower(config) for name in TOWERS})

    def gather(self, tables: SparseTables, batch: Batch, train: bool) -> Gathered:
        looked_up = torch.cat([batch.single.flatten(), *[s.flatten() for s in batch.sequences]])
        rows, inverse = torch.unique(looked_up, return_inverse=True)
        embedding = tables.embedding[rows]
        wide = tables.wide[rows]
        if train:
            embedding.requires_grad_(True)
            wide.requires_grad_(True)
        return Gathered(rows, embedding, wide, inverse)

    def forward(self, gathered: Gathered, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        n, fields = batch.single.shape
        dim = self.config.dim
        # One index_select per part: its backward is an index_add into the few gathered
        # rows (indexing's backward, and slicing one big gather, cost several times more).
        sizes = [n * fields] + [n * s.shape[1] for s in batch.sequences]
        inverses = torch.split(gathered.inverse, sizes)
        single = gathered.embedding.index_select(0, inverses[0]).view(n, fields, dim)
        wide_sum = gathered.wide.index_select(0, inverses[0]).view(n, fields, -1).sum(dim=1)
        pooled, items, mask = [], torch.empty(0), torch.empty(0, dtype=torch.bool)
        for index, sequence in enumerate(batch.sequences):
            length = sequence.shape[1]
            rows = inverses[index + 1]
            part = gathered.embedding.index_select(0, rows).view(n, length, dim)
            part_wide = gathered.wide.index_select(0, rows).view(n, length, -1)
            present = sequence != PADDING_ROW
            count = present.sum(dim=1, keepdim=True).clamp(min=1)
            pooled.append(part.sum(dim=1) / count)  # padding rows are zero
            wide_sum = wide_sum + part_wide.sum(dim=1) / count
            if index == self.config.interest_sequence:
                items, mask = part, present
        logits = [
            self.towers[name](single, pooled, items, mask, batch.dense, wide_sum[:, i])
            for i, name in enumerate(TOWERS)
        ]
        return logits[0], logits[1]


def probabilities(
    logit_ctr: torch.Tensor, logit_cvr: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p_ctr = torch.sigmoid(logit_ctr)
    p_cvr = torch.sigmoid(logit_cvr)
    return p_ctr, p_cvr, p_ctr * p_cvr


def loss(
    logit_ctr: torch.Tensor, logit_cvr: torch.Tensor, batch: Batch, objective: str
) -> torch.Tensor:
    """The ESMM loss (or the ``separate`` baseline's), a mean over the batch."""
    bce = nn.functional.binary_cross_entropy_with_logits
    ctr_loss = bce(logit_ctr, batch.click)
    if objective == "separate":
        clicked = batch.click > 0
        if not bool(clicked.any()):
            return ctr_loss + 0.0 * logit_cvr.sum()
        return ctr_loss + bce(logit_cvr[clicked], batch.conversion[clicked])
    _, _, p_ctcvr = probabilities(logit_ctr, logit_cvr)
    ctcvr_label = batch.click * batch.conversion
    p = p_ctcvr.clamp(1e-7, 1 - 1e-7)
    ctcvr_loss = -(ctcvr_label * torch.log(p) + (1 - ctcvr_label) * torch.log1p(-p)).mean()
    return ctr_loss + ctcvr_loss
