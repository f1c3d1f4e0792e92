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

import functools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.encode import Batch
from trainer.fields import FieldSpec
from trainer.vocab import PADDING_ROW

SCHEMA_VERSION = 1
TOWERS = ("ctr", "cvr")
log = logging.getLogger("liverank.trainer")


def native_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX); None when unknown.

    >>> native_bfloat16("flags : fpu avx2 avx512f avx512_bf16")
    True
    >>> native_bfloat16("flags : fpu avx2 avx512f")
    False
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set(cpuinfo.split())
    if not flags & {"avx2", "avx512f", "asimd", "fp"}:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def _warn_if_emulated_bfloat16() -> None:
    """Once per process (models are built at every load and restore)."""
    if native_bfloat16() is False:
        log.warning(
            "trainer.mlp_dtype is bfloat16 but this CPU has no native bfloat16 (AVX512-BF16 "
            'or AMX): the MLP runs emulated and slower; set trainer.mlp_dtype = "float32"'
        )


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
    mlp_dtype: str = "float32"  # or "bfloat16": the towers' MLP under autocast
    specs: tuple[FieldSpec, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def build(
        cls, specs: list[FieldSpec], dim: int, hidden: tuple[int, ...], interest: tuple[str, str],
        objective: str, mlp_dtype: str = "float32",
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
            mlp_dtype=mlp_dtype,
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
        if self.mlp_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model config: mlp_dtype {self.mlp_dtype!r} is not known")


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


# Look-ups up to which inference gathers rows plainly (measured: a 200-candidate request
# 1.16 vs 1.35 ms plain; 2,000-row chunks even; 8,192-row chunks 16 % slower plain).
PLAIN_GATHER_MAX = 65_536


@dataclass
class Packed:
    """A batch's sequence field without its padding: one entry per present item."""

    owner: torch.Tensor  # [P] the sample each item belongs to (ascending)
    position: torch.Tensor  # [P] its place in the sample's sequence
    count: torch.Tensor  # [N, 1] items per sample, at least 1 (a mean's divisor)

    @property
    def samples(self) -> int:
        return int(self.count.shape[0])

    @classmethod
    def of(cls, sequence: torch.Tensor) -> Packed:
        owner, position = torch.nonzero(sequence != PADDING_ROW, as_tuple=True)
        count = torch.bincount(owner, minlength=sequence.shape[0]).clamp(min=1)
        return cls(owner, position, count.unsqueeze(1).to(torch.float32))

    def total(self, values: torch.Tensor, samples: int) -> torch.Tensor:
        """Per-sample sum of ``values`` ([P, K] → [N, K]); an empty sequence sums to zero."""
        out = values.new_zeros(samples, values.shape[1])
        return out.index_add(0, self.owner, values)


class Interest(nn.Module):
    """Attention of the target item over a sequence of items (with positions).

    The items come packed (no padding): most users' recent lists are far shorter than the
    field's length, and a padded [N, L, D] attention spent most of a step on zeros.
    """

    def __init__(self, dim: int, length: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.position = nn.Parameter(torch.zeros(length, dim))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, target: torch.Tensor, items: torch.Tensor, packed: Packed) -> torch.Tensor:
        """[N, D]: each target's attention-weighted sum of its sample's items. ``packed``
        holds N samples' items, or one sample's that every target shares (a request)."""
        if packed.samples != target.shape[0]:
            return self._shared(target, items, packed)
        query = self.query(target).index_select(0, packed.owner)
        keys = items + self.position.index_select(0, packed.position)
        scores = (query * keys).sum(dim=1) * self.scale
        # A softmax within each sample's items; the shift by the sample's top score only
        # keeps exp() in range, so no gradient flows through it.
        top = scores.new_full((target.shape[0],), -math.inf)
        top = top.scatter_reduce(0, packed.owner, scores.detach(), "amax")
        weights = torch.exp(scores - top.index_select(0, packed.owner))
        norm = packed.total(weights.unsqueeze(1), target.shape[0])
        weights = weights / norm.squeeze(1).index_select(0, packed.owner)
        return packed.total(weights.unsqueeze(1) * items, target.shape[0])

    def _shared(self, target: torch.Tensor, items: torch.Tensor, packed: Packed) -> torch.Tensor:
        """The same attention when all N targets attend over one list of P items: an
        [N, P] product instead of N copies of the list (200 candidates × 50 recent anchors
        made 10,000 packed items per request)."""
        if len(items) == 0:
            return target.new_zeros(target.shape)
        keys = items + self.position.index_select(0, packed.position)
        scores = self.query(target) @ keys.T * self.scale
        return torch.softmax(scores, dim=1) @ items


class FactorizationMachine(torch.autograd.Function):
    """Each tower's FM term, ½((Σv)² − Σv²) summed over the embedding dimension, where the
    fields v are the shared ones [N, F, D] plus the tower's interest output [N, D].

    With T = Σ shared and I a tower's interest, the term is ½(|T|² − Σ|v|²) + T·I: the part
    over the shared fields is common to the towers. The backward is written out, one pass
    over [N, F, D] for all towers: d/dv = Σ_t g_t (T + I_t) − (Σ_t g_t) v, d/dI_t = g_t T.
    Autograd's own backward of the plain formula made several passes over the shared fields
    (the square, its sum, their broadcasts and accumulations) per tower.
    """

    @staticmethod
    def forward(
        ctx: Any, shared: torch.Tensor, *interests: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        n = shared.shape[0]
        total = shared.sum(dim=1)
        flat = shared.reshape(n, 1, -1)
        squares = torch.bmm(flat, flat.transpose(1, 2)).view(n)  # Σ|v|², without a copy
        common = 0.5 * (total.pow(2).sum(dim=1) - squares)
        ctx.save_for_backward(shared, total, *interests)
        return tuple(common + (total * interest).sum(dim=1) for interest in interests)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shared, total, *interests = ctx.saved_tensors
        weight = torch.stack(grads).sum(dim=0).unsqueeze(1)  # Σ_t g_t, [N, 1]
        towards = weight * total
        for grad, interest in zip(grads, interests, strict=True):
            towards = towards + grad.unsqueeze(1) * interest
        grad_shared = torch.addcmul(towards.unsqueeze(1), shared, weight.unsqueeze(2), value=-1)
        return (grad_shared, *(grad.unsqueeze(1) * total for grad in grads))


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

    @property
    def first(self) -> nn.Linear:
        layer: nn.Linear = self.layers[0]  # type: ignore[assignment]
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.first(x))

    def rest(self) -> list[nn.Linear]:
        """The layers after the first, in the order ``finish`` applies them: block 0, then
        each further layer and its block, then the output."""
        order: list[nn.Linear] = [self.blocks[0]]  # type: ignore[list-item]
        for layer, block in zip(self.layers[1:], self.blocks[1:], strict=True):
            order += [layer, block]  # type: ignore[list-item]
        return [*order, self.out]

    def finish(self, first: torch.Tensor, weights: Sequence[Weights] | None = None) -> torch.Tensor:
        """The rest of the network from the first layer's output (before its ReLU), with
        ``weights`` for ``rest()`` (the modules' own when None)."""
        linear = nn.functional.linear
        rest = iter(weights or [(layer.weight, layer.bias) for layer in self.rest()])
        x = first
        for index in range(len(self.layers)):
            x = torch.relu(x if index == 0 else linear(x, *next(rest)))
            x = x + torch.relu(linear(x, *next(rest)))
        out: torch.Tensor = linear(x, *next(rest)).squeeze(1)
        return out


class Tower(nn.Module):
    """One DFM tower: wide + FM + interest + residual MLP → a logit.

    Its input fields are the batch's single fields, the pooled sequences and its own
    interest output, then the dense values; ``ESMM.forward`` computes the parts the towers
    share once (see there), which gives the same logit as this tower on its own would.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        length = config.sequence_lengths[config.interest_sequence]
        self.interest: Interest = Interest(config.dim, length)
        fields = len(config.single_fields) + len(config.sequence_fields) + 1
        width = fields * config.dim + len(config.numeric_fields)
        self.mlp: ResidualMLP = ResidualMLP(width, config.hidden)
        self.bias = nn.Parameter(torch.zeros(1))


def distinct(
    looked_up: torch.Tensor, spread: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(the distinct ids, ascending; each look-up's position among them; with ``spread``,
    the sparse [distinct, look-ups] 0/1 matrix whose row r marks the look-ups of id r).

    One stable sort gives all three (``torch.unique`` sorts too, and hides the order): the
    sorted look-ups' positions are the matrix's columns, row by row."""
    ordered, order = torch.sort(looked_up, stable=True)
    rows, at, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    inverse = torch.empty_like(at).scatter_(0, order, at)
    if not spread:
        return rows, inverse, None
    starts = torch.zeros(len(rows) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=starts[1:])
    ones = torch.ones(len(order))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": only mm is used
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(
            starts, order, ones, size=(len(rows), len(order)), check_invariants=False
        )
    return rows, inverse, matrix


class Spread(torch.autograd.Function):
    """``rows.index_select(0, inverse)`` whose backward sums each look-up's gradient into its
    row as one sparse matrix product: ``spread @ grad``. index_select's own backward (an
    index_add, one scalar add per element) took ~4x as long for a batch's 40,000 look-ups."""

    @staticmethod
    def forward(
        ctx: Any, rows: torch.Tensor, inverse: torch.Tensor, spread: torch.Tensor
    ) -> torch.Tensor:
        ctx.spread = spread
        return rows.index_select(0, inverse)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.spread @ grad.contiguous(), None, None


@dataclass
class Gathered:
    """The rows one batch touches, as leaf tensors whose gradients the sparse step applies."""

    rows: torch.Tensor  # the row ids gathered (distinct when training)
    embedding: torch.Tensor  # [U, D] requires grad
    wide: torch.Tensor  # [U, 2] requires grad
    inverse: torch.Tensor | None  # position in ``rows`` of every look-up (None: rows are them)
    sequences: list[Packed]  # each sequence field's present items, in ``inverse`` order
    spread: torch.Tensor | None = None  # training: ``Spread``'s sparse [U, L] sum matrix

    def looked_up(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (one row per id of ``rows``) as one row per look-up, in look-up order."""
        if self.inverse is None:
            return values
        if self.spread is None:
            return values.index_select(0, self.inverse)
        out: torch.Tensor = Spread.apply(values, self.inverse, self.spread)
        return out


Weights = tuple[torch.Tensor, torch.Tensor]  # a linear layer's (weight, bias)


@dataclass
class MLPWeights:
    """Both towers' MLP weights in the layout ``ESMM._deep`` reads."""

    joint: torch.Tensor  # the first layers' shared and dense columns, towers stacked
    bias: torch.Tensor  # the first layers' biases, stacked
    interest: list[torch.Tensor]  # each tower's first-layer interest columns
    rest: list[list[Weights]]  # each tower's ``ResidualMLP.rest()``

    def to(self, dtype: torch.dtype) -> MLPWeights:
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype).contiguous()

        return MLPWeights(
            cast(self.joint),
            cast(self.bias),
            [cast(t) for t in self.interest],
            [[(cast(w), cast(b)) for w, b in tower] for tower in self.rest],
        )


class ESMM(nn.Module):
    """Two towers over shared embeddings; ``forward`` returns (logit_ctr, logit_cvr)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.towers = nn.ModuleDict({name: Tower(config) for name in TOWERS})
        self._serving: tuple[Any, MLPWeights] | None = None  # see ``_served``
        if config.mlp_dtype == "bfloat16":
            _warn_if_emulated_bfloat16()

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave ``_served``'s cache behind; it is made again on use."""
        state = dict(self.__dict__)
        state["_serving"] = None
        return state

    def weights_changed(self) -> None:
        """Forget ``_served``'s weights: for updates that parameters' version counters miss
        (torch's fused Adam writes them without counting)."""
        self._serving = None

    def tower_list(self) -> list[Tower]:
        """The towers in ``TOWERS`` order (CTR, CVR)."""
        return [self.towers[name] for name in TOWERS]  # type: ignore[misc]

    def gather(self, tables: SparseTables, batch: Batch, train: bool) -> Gathered:
        sequences = [Packed.of(s) for s in batch.sequences]
        looked_up = torch.cat(
            [batch.single.flatten()]
            + [s[p.owner, p.position] for s, p in zip(batch.sequences, sequences, strict=True)]
        )
        # The step updates each touched row once: training gathers the distinct rows. So do
        # large batches, whose few distinct rows stay in cache; a small one (a request,
        # ~10,000 look-ups) is gathered plainly, without the sort that finding them costs.
        inverse = spread = None
        if train or len(looked_up) > PLAIN_GATHER_MAX:
            rows, inverse, spread = distinct(looked_up, spread=train)
        else:
            rows = looked_up
        embedding = tables.embedding.index_select(0, rows)
        wide = tables.wide.index_select(0, rows)
        if train:
            embedding.requires_grad_(True)
            wide.requires_grad_(True)
        return Gathered(rows, embedding, wide, inverse, sequences, spread)

    def forward(self, gathered: Gathered, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        n, fields = batch.single.shape
        dim = self.config.dim
        sizes = [n * fields] + [len(p.owner) for p in gathered.sequences]
        embeddings = torch.split(gathered.looked_up(gathered.embedding), sizes)
        wides = torch.split(gathered.looked_up(gathered.wide), sizes)
        single = embeddings[0].view(n, fields, dim)
        wide_sum = wides[0].view(n, fields, -1).sum(dim=1)
        pooled = []
        items = torch.empty(0)  # the interest sequence's present items
        interest = gathered.sequences[self.config.interest_sequence]  # and where they sit
        for index, packed in enumerate(gathered.sequences):
            # A sequence every row shares (a request's user lists) is pooled once.
            part, samples = embeddings[index + 1], packed.samples
            pooled.append((packed.total(part, samples) / packed.count).expand(n, -1))
            wide_sum = wide_sum + packed.total(wides[index + 1], samples) / packed.count
            if index == self.config.interest_sequence:
                items = part
        # The fields every tower sees; each tower adds its own interest output to them.
        shared = torch.cat([single, torch.stack(pooled, dim=1)], dim=1)
        towers = self.tower_list()
        target = single[:, self.config.interest_target]
        interests = [tower.interest(target, items, interest) for tower in towers]  # per tower
        fms = self._fm(shared, interests)
        deeps = self._deep(shared, batch.dense, interests)
        logits = [
            tower.bias + wide_sum[:, i] + fm + deep
            for i, (tower, fm, deep) in enumerate(zip(towers, fms, deeps, strict=True))
        ]
        return logits[0], logits[1]

    @staticmethod
    def _fm(shared: torch.Tensor, interests: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tower's ½((Σv)² − Σv²) over the shared fields plus its interest output."""
        return list(FactorizationMachine.apply(shared, *interests))

    def _deep(
        self, shared: torch.Tensor, dense: torch.Tensor, interests: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Each tower's MLP. The towers' inputs differ only in the interest columns, so
        their first layers run as one matmul over the shared columns (one input cast, one
        gradient for it) plus a small one over each tower's interest."""
        cut = shared.shape[1] * shared.shape[2]
        weights = self._mlp_weights(cut) if torch.is_grad_enabled() else self._served(cut)
        mlps = [tower.mlp for tower in self.tower_list()]
        low = self.config.mlp_dtype == "bfloat16"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            joint = nn.functional.linear(
                torch.cat([shared.flatten(1), dense], 1), weights.joint, weights.bias
            )
            parts = torch.split(joint, [m.first.out_features for m in mlps], dim=1)
            deeps = [
                m.finish(part + nn.functional.linear(interest, own), rest)
                for m, part, interest, own, rest in zip(
                    mlps, parts, interests, weights.interest, weights.rest, strict=True
                )
            ]
        return [deep.float() for deep in deeps]

    def _mlp_weights(self, cut: int) -> MLPWeights:
        """The towers' MLP weights as ``_deep`` reads them, from the parameters (autograd
        follows): tower input columns are the shared fields [0, cut), the interest
        [cut, cut + dim), the dense values after."""
        dim = self.config.dim
        mlps = [tower.mlp for tower in self.tower_list()]
        return MLPWeights(
            joint=torch.cat(
                [
                    torch.cat([m.first.weight[:, :cut], m.first.weight[:, cut + dim :]], 1)
                    for m in mlps
                ]
            ),
            bias=torch.cat([m.first.bias for m in mlps]),
            interest=[m.first.weight[:, cut : cut + dim] for m in mlps],
            rest=[[(layer.weight, layer.bias) for layer in m.rest()] for m in mlps],
        )

    def _served(self, cut: int) -> MLPWeights:
        """``_mlp_weights`` joined and cast to the MLP's dtype once for as long as the
        parameters stay as they are: a scorer's model never changes; a trainer's changes at
        every step (``weights_changed``), and any other in-place write shows in the tensors'
        version counters. Joining and casting them took ~14 % of a 200-candidate request's
        forward pass."""
        key = (cut, *((p.data_ptr(), p._version) for p in self.parameters()))
        if self._serving is None or self._serving[0] != key:
            dtype = torch.bfloat16 if self.config.mlp_dtype == "bfloat16" else torch.float32
            with torch.no_grad():
                self._serving = (key, self._mlp_weights(cut).to(dtype))
        return self._serving[1]


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
