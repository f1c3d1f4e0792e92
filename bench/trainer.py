"""Trainer throughput and AUC: liverank's learner beside deepctr-torch's DeepFM, one run.

Both train one pass over the same training samples (day 1 of a simulated world, landed by the
workers' pipeline) with the same embedding size, batch size and MLP, and are scored on the same
test samples (day 2). The peer gets every field liverank reads: IDs and bucketed numbers as
sparse features (label-encoded over train and test, i.e. it knows every ID in advance), the
numbers' log values as dense features, and the recent-anchor sequence as a mean-pooled
variable-length feature. liverank trains its full ESMM (two towers, interest attention,
admission) — the peer a single CTR DeepFM. Throughput is samples/s of training alone (the
encoding included for liverank, the peer's input dict prepared before its clock starts).
Before the measured repeats, each trains once on the same samples, unmeasured: kernel JIT and
the allocator's growth to the fit's sizes are paid once per process, as in a long-lived
trainer. (Warmed on a tenth of the samples, liverank's first measured fit ran 50–61k/s and
the later ones 66–81k/s: the first full-size fit's memory comes fresh from the system.)

    .venv/bin/python bench/trainer.py [--users 2000 --anchors 500] [--samples DIR] [--repeats 5]

Last line: ``trainer: liverank=<samples/s> peer=<samples/s> ratio=<liverank/peer>
auc_liverank=<a> auc_peer=<b>`` (medians over the repeats).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liverank.settings import Settings
from trainer.data import DAY, WindowReader, closed_windows
from trainer.encode import _items, _numbers, _strings
from trainer.fields import FieldSpec
from trainer.learner import Learner
from trainer.metrics import auc


def land(root: str, users: int, anchors: int) -> None:
    from liverank.simulator.run import parse_start
    from liverank.simulator.traffic import TrafficGenerator
    from liverank.simulator.world import WorldConfig, build_world
    from streams.join import LabelRules
    from streams.offline import land_traffic

    config = WorldConfig(
        days=2, users=users, anchors=anchors, seed=7, start_ts=parse_start("2026-11-01")
    )
    world = build_world(config)
    land_traffic(TrafficGenerator(world, seed=7).days(), root, LabelRules(), world, 4)


def split_days(root: str) -> tuple[pa.Table, pa.Table]:
    windows = closed_windows(root)
    first = windows[0] - windows[0] % DAY
    reader = WindowReader(root, cache_windows=1)
    train = reader.windows([w for w in windows if w < first + DAY])
    test = reader.windows([w for w in windows if first + DAY <= w < first + 2 * DAY])
    return train, test


def run_liverank(settings: Settings, train: pa.Table, test: pa.Table) -> tuple[float, float]:
    learner = Learner(settings)
    stats = learner.fit(train, "incremental")
    p_ctr = learner.predict(test)[0]
    return stats.rate, auc(test["click"].to_numpy(), p_ctr)


def peer_inputs(
    specs: list[FieldSpec], train: pa.Table, test: pa.Table, max_length: int, dim: int
) -> tuple[list, dict, dict]:
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat

    columns: list = []
    x_train: dict[str, np.ndarray] = {}
    x_test: dict[str, np.ndarray] = {}
    both = pa.concat_tables([train, test], promote_options="default")
    n = train.num_rows
    for spec in specs:
        if spec.kind == "numeric":
            values = _numbers(both, spec)
            buckets = np.searchsorted(np.asarray(spec.boundaries), values, side="right")
            columns.append(SparseFeat(spec.name, len(spec.boundaries) + 2, embedding_dim=dim))
            x_train[spec.name], x_test[spec.name] = buckets[:n], buckets[n:]
            dense = (np.sign(values) * np.log1p(np.abs(values))).astype(np.float32)
            columns.append(DenseFeat(spec.name + "_v", 1))
            x_train[spec.name + "_v"], x_test[spec.name + "_v"] = dense[:n], dense[n:]
        elif spec.kind == "id":
            encoded = pc.dictionary_encode(_strings(both, spec))
            codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) + 1
            columns.append(SparseFeat(spec.name, len(encoded.dictionary) + 2, embedding_dim=dim))
            x_train[spec.name], x_test[spec.name] = codes[:n], codes[n:]
        elif spec.name == "u_recent_anchors":
            flat, lengths = _items(_strings(both, spec), max_length)
            encoded = pc.dictionary_encode(flat)
            codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) + 1
            padded = np.zeros((both.num_rows, max_length), dtype=np.int64)
            owners = np.repeat(np.arange(both.num_rows), lengths)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            padded[owners, np.arange(len(codes)) - starts] = codes
            feature = SparseFeat(spec.name, len(encoded.dictionary) + 2, embedding_dim=dim)
            columns.append(VarLenSparseFeat(feature, maxlen=max_length, combiner="mean"))
            x_train[spec.name], x_test[spec.name] = padded[:n], padded[n:]
    return columns, x_train, x_test


def run_peer(
    settings: Settings, learner: Learner, train: pa.Table, test: pa.Table
) -> tuple[float, float]:
    import torch
    from deepctr_torch.models import DeepFM

    columns, x_train, x_test = peer_inputs(
        learner.specs, train, test, settings.trainer.interest_length, learner.config.dim
    )
    torch.manual_seed(settings.trainer.seed)
    model = DeepFM(
        columns,
        columns,
        dnn_hidden_units=settings.trainer.mlp_hidden,
        task="binary",
        device="cpu",
        seed=settings.trainer.seed,
    )
    model.compile("adagrad", "binary_crossentropy")
    y = train["click"].to_numpy().astype(np.float32)
    began = time.perf_counter()
    model.fit(x_train, y, batch_size=settings.trainer.batch_size, epochs=1, verbose=0)
    rate = train.num_rows / (time.perf_counter() - began)
    scores = model.predict(x_test, batch_size=8192).reshape(-1)
    return rate, auc(test["click"].to_numpy(), scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--anchors", type=int, default=500)
    parser.add_argument("--samples", help="an existing samples root (≥ 2 days)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.samples
        if root is None:
            root = scratch
            print(f"landing 2 simulated days ({args.users} users) …", file=sys.stderr)
            land(root, args.users, args.anchors)
        train, test = split_days(root)
    print(f"train {train.num_rows:,d} samples, test {test.num_rows:,d}", file=sys.stderr)
    print("warming up (one unmeasured fit each) …", file=sys.stderr)
    run_liverank(settings, train, test.slice(0, 1000))
    run_peer(settings, Learner(settings), train, test.slice(0, 1000))
    ours, peers, auc_ours, auc_peers = [], [], [], []
    for repeat in range(args.repeats):
        rate, score = run_liverank(settings, train, test)
        ours.append(rate)
        auc_ours.append(score)
        peer_rate, peer_score = run_peer(settings, Learner(settings), train, test)
        peers.append(peer_rate)
        auc_peers.append(peer_score)
        print(
            f"repeat {repeat + 1}: liverank {rate:,.0f}/s auc {score:.4f}  "
            f"peer {peer_rate:,.0f}/s auc {peer_score:.4f}",
            file=sys.stderr,
        )
    mine, theirs = statistics.median(ours), statistics.median(peers)
    print(
        f"trainer: liverank={mine:.0f} peer={theirs:.0f} ratio={mine / theirs:.2f} "
        f"auc_liverank={statistics.median(auc_ours):.4f} "
        f"auc_peer={statistics.median(auc_peers):.4f}"
    )


if __name__ == "__main__":
    main()
