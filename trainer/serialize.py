"""A learner ↔ the files of a checkpoint version (safetensors, Parquet, JSON; no pickle)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from liverank.settings import Settings
from trainer.checkpoints import CheckpointError, CheckpointStore, sha256
from trainer.learner import Learner
from trainer.model import ModelConfig


def learner_files(learner: Learner) -> dict[str, bytes]:
    """``model.safetensors`` and ``vocab.parquet``; rows whose weights went to zero are left
    out of the vocabulary (they score as their vocabulary's default)."""
    tensors = {k: v.contiguous() for k, v in learner.tensors().items()}
    sink = pa.BufferOutputStream()
    pq.write_table(learner.vocab.to_table(learner.dropped_rows()), sink, compression="zstd")
    return {
        "model.safetensors": save_tensors(tensors),
        "vocab.parquet": bytes(sink.getvalue().to_pybytes()),
    }


def read_verified(store: CheckpointStore, version: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the files, each checked against the manifest as read (a file that
    changes between the check and the read is caught)."""
    manifest = store.manifest(version)
    files = {}
    for name, expected in manifest["files"].items():
        data = store.read_file(version, name)
        if sha256(data) != expected["sha256"]:
            raise CheckpointError(f"version {version}: {name} changed while being read")
        files[name] = data
    return manifest, files


def load_learner(
    store: CheckpointStore, version: str, settings: Settings
) -> tuple[Learner, dict[str, Any]]:
    manifest, files = read_verified(store, version)
    try:
        config = ModelConfig.from_json(manifest["model_config"])
        tensors: dict[str, torch.Tensor] = load_tensors(files["model.safetensors"])
        vocab = pq.read_table(pa.BufferReader(files["vocab.parquet"]))
        learner = Learner.restore(settings, config, tensors, vocab)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"version {version} cannot be loaded: {exc}") from exc
    return learner, manifest
