"""A model with everything it learns with: vocabulary, admission rules, tables, optimizers.

``Learner.fit`` trains on a sample table (one pass, shuffled with a seed fixed by the table's
event time, so a replay trains the same way); ``predict`` scores under inference mode;
``tensors`` / ``Learner.restore`` move the whole state through a checkpoint (weights and the
optimizer state as safetensors, the vocabulary as Parquet, the config as JSON).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from liverank.settings import Settings
from trainer.admission import AdmissionRule, Phase, rule_for
from trainer.encode import Batch, Columns, Encoder
from trainer.fields import field_specs
from trainer.metrics import quality
from trainer.model import ESMM, ModelConfig, SparseTables, loss, probabilities
from trainer.optim import SparseOptimizer
from trainer.vocab import PADDING_ROW, Vocabulary


@dataclass
class FitStats:
    samples: int = 0
    seconds: float = 0.0
    new_rows: int = 0
    loss: float = math.nan

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Learner:
    def __init__(self, settings: Settings, config: ModelConfig | None = None) -> None:
        trainer = settings.trainer
        self.settings = settings
        if config is None:
            config = ModelConfig.build(
                field_specs(trainer),
                trainer.embedding_dim,
                trainer.mlp_hidden,
                (trainer.interest_sequence, trainer.interest_target),
                trainer.objective,
                trainer.mlp_dtype,
            )
        self.config = config
        self.specs = list(config.specs)
        self.vocab = Vocabulary()
        self.encoder = Encoder(self.specs, self.vocab)
        self.rules: dict[str, AdmissionRule] = {
            spec.vocab: rule_for(settings.admission, spec.vocab, trainer.seed)
            for spec in self.specs
        }
        torch.manual_seed(trainer.seed)
        self.model = ESMM(config)
        self.tables = SparseTables(config.dim, seed=trainer.seed)
        self.sparse = SparseOptimizer(
            self.tables,
            trainer.learning_rate,
            trainer.ftrl_alpha,
            trainer.ftrl_beta,
            trainer.ftrl_l2,
        )
        # fused: one kernel over all the towers' tensors (a per-tensor loop costs 3x more).
        self.dense = torch.optim.Adam(
            self.model.parameters(), lr=trainer.dense_learning_rate, fused=True
        )
        self._grow([v.default_row for v in self.vocab.vocabs.values()])
        self.trained_samples = 0

    # -- training ----------------------------------------------------------------------------

    def _grow(self, new_rows: list[int]) -> None:
        self.tables.ensure(self.vocab.size)
        self.sparse.fit_to(self.tables)
        self.tables.init_rows(new_rows)
        self.sparse.reset_rows(new_rows)

    def observe(self, table: pa.Table | Columns, phase: Phase) -> int:
        """Count the table's IDs into the vocabulary (admission); return how many were new."""
        columns = Columns.of(table)
        names = columns.table.column_names
        ts = float(pc.max(columns.table["ts"]).as_py()) if "ts" in names else 0.0
        new_rows = self.encoder.observe(columns, ts, self.rules, phase)
        self._grow(new_rows)
        self.sparse.refresh_l1(self.vocab, self.rules)
        return len(new_rows)

    def fit(
        self,
        table: pa.Table,
        phase: Phase,
        progress: Callable[[int, int], None] | None = None,
    ) -> FitStats:
        """One pass over ``table`` (admission first, then shuffled mini-batches)."""
        began = time.perf_counter()
        stats = FitStats(samples=table.num_rows)
        if table.num_rows == 0:
            return stats
        columns = Columns(table)
        stats.new_rows = self.observe(columns, phase)
        seed = self.settings.trainer.seed + int(float(pc.min(table["ts"]).as_py() or 0))
        order = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(seed))
        batch = self.encoder.encode(columns).slice(order)  # shuffled once; batches are views
        size = self.settings.trainer.batch_size
        self.model.train()
        losses = []
        for start in range(0, len(batch), size):
            part = batch.slice(slice(start, start + size))
            losses.append(self.step(part))
            if progress is not None:
                progress(min(start + size, len(batch)), len(batch))
        self.trained_samples += table.num_rows
        stats.loss = float(np.mean(losses))
        stats.seconds = time.perf_counter() - began
        return stats

    def step(self, batch: Batch) -> float:
        gathered = self.model.gather(self.tables, batch, train=True)
        logit_ctr, logit_cvr = self.model(gathered, batch)
        value = loss(logit_ctr, logit_cvr, batch, self.config.objective)
        self.dense.zero_grad(set_to_none=True)
        value.backward()  # type: ignore[no-untyped-call]
        self.dense.step()
        self.model.weights_changed()
        self.sparse.step(self.tables, gathered, scale=float(len(batch)))
        return float(value.detach())

    # -- scoring -----------------------------------------------------------------------------

    def predict_batch(self, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.model.eval()
        with torch.inference_mode():
            gathered = self.model.gather(self.tables, batch, train=False)
            p_ctr, p_cvr, p_ctcvr = probabilities(*self.model(gathered, batch))
        return p_ctr.numpy(), p_cvr.numpy(), p_ctcvr.numpy()

    def predict(self, table: pa.Table, chunk: int = 8192) -> tuple[np.ndarray, ...]:
        """(pCTR, pCVR, pCTCVR) of every row of ``table``."""
        parts = [
            self.predict_batch(self.encoder.encode(table.slice(start, chunk)))
            for start in range(0, table.num_rows, chunk)
        ]
        if not parts:
            empty = np.zeros(0, dtype=np.float32)
            return empty, empty, empty
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    def evaluate(self, table: pa.Table) -> dict[str, float]:
        """AUC and logloss of pCTR and pCTCVR on ``table`` (its labels)."""
        p_ctr, _, p_ctcvr = self.predict(table)
        click = label_column(table, "click")
        conversion = label_column(table, "conversion")
        return quality(click, conversion, p_ctr, p_ctcvr)

    def clone(self) -> Learner:
        return copy.deepcopy(self)

    # -- checkpoint state --------------------------------------------------------------------

    def dropped_rows(self) -> set[int]:
        """Admitted rows whose weights all went to zero (dynamic L1): left out of a publish."""
        zero = (self.tables.wide == 0).all(dim=1) & (self.tables.embedding == 0).all(dim=1)
        defaults = {v.default_row for v in self.vocab.vocabs.values()} | {PADDING_ROW}
        used: set[int] = set()
        for entries in self.vocab.vocabs.values():
            used.update(entries.rows.values())
        index = torch.nonzero(zero).flatten().tolist()
        return {row for row in index if row in used and row not in defaults}

    def finite(self) -> bool:
        tensors = [self.tables.embedding, self.tables.wide, *self.model.parameters()]
        return all(bool(torch.isfinite(t).all()) for t in tensors)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights (``model.*``, ``sparse.*``) and optimizer state (``optim.*``) to save."""
        out = {f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()}
        rows = self.vocab.size
        out["sparse.embedding"] = self.tables.embedding[:rows].clone()
        out["sparse.wide"] = self.tables.wide[:rows].clone()
        out["optim.accumulator"] = self.sparse.accumulator[:rows].clone()
        out["optim.z"] = self.sparse.z[:rows].clone()
        out["optim.n"] = self.sparse.n[:rows].clone()
        for index, state in self.dense.state_dict()["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"optim.dense.{index}.{name}"] = value.detach().clone().reshape(-1)
        out["optim.trained_samples"] = torch.tensor([float(self.trained_samples)])
        return out

    @classmethod
    def restore(
        cls,
        settings: Settings,
        config: ModelConfig,
        tensors: dict[str, torch.Tensor],
        vocab: pa.Table,
    ) -> Learner:
        """A learner from a checkpoint's tensors and vocabulary (trainer state included when
        the checkpoint carries it; a weights-only one restarts the optimizer state)."""
        learner = cls(settings, config)
        learner.model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        embedding = tensors["sparse.embedding"]
        learner.vocab = Vocabulary.from_table(vocab, int(embedding.shape[0]))
        learner.encoder = Encoder(learner.specs, learner.vocab)
        learner.tables.ensure(learner.vocab.size)
        learner.tables.embedding[: embedding.shape[0]] = embedding
        learner.tables.wide[: embedding.shape[0]] = tensors["sparse.wide"]
        learner.sparse.fit_to(learner.tables)
        rows = int(embedding.shape[0])
        if "optim.accumulator" in tensors:
            learner.sparse.accumulator[:rows] = tensors["optim.accumulator"]
            learner.sparse.z[:rows] = tensors["optim.z"]
            learner.sparse.n[:rows] = tensors["optim.n"]
        learner._restore_dense(tensors)
        learner.sparse.refresh_l1(learner.vocab, learner.rules)
        learner.trained_samples = int(tensors.get("optim.trained_samples", torch.zeros(1))[0])
        return learner

    def _restore_dense(self, tensors: dict[str, torch.Tensor]) -> None:
        if not any(k.startswith("optim.dense.") for k in tensors):
            return
        self.model.train()
        # Adam's state appears after a first step: make it exist, then overwrite it.
        parameters = list(self.model.parameters())
        state: dict[int, dict[str, Any]] = {}
        for index, parameter in enumerate(parameters):
            entry: dict[str, Any] = {}
            for name in ("step", "exp_avg", "exp_avg_sq"):
                value = tensors.get(f"optim.dense.{index}.{name}")
                if value is None:
                    break
                entry[name] = value.reshape(() if name == "step" else parameter.shape).clone()
            else:
                state[index] = entry
        saved = self.dense.state_dict()
        saved["state"] = state
        self.dense.load_state_dict(saved)


def label_column(table: pa.Table, name: str) -> np.ndarray:
    """A label column as float64 (nulls as 0)."""
    values = pc.fill_null(table[name].combine_chunks(), 0).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)
