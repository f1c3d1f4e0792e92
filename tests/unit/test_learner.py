"""The model, the encoder and the learner on small tables (no services)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from features.request import request_rows
from liverank.settings import Settings
from snapshots.samples import SCHEMA
from trainer import model
from trainer.encode import Encoder, RequestColumns, rows_table
from trainer.fields import field_specs
from trainer.learner import Learner
from trainer.model import FactorizationMachine, Spread, distinct
from trainer.vocab import PADDING_ROW, Vocabulary


def synthetic(n: int, seed: int) -> pa.Table:
    """Samples where clicks depend on the anchor (a few good ones) and on the position."""
    rng = np.random.default_rng(seed)
    anchors = rng.integers(0, 40, n)
    position = rng.integers(0, 8, n).astype(float)
    good = anchors < 8
    p_click = np.where(good, 0.45, 0.05) * (1.0 - position / 16)
    click = (rng.random(n) < p_click).astype(np.int8)
    conversion = (click * (rng.random(n) < np.where(good, 0.6, 0.1))).astype(np.int8)
    columns = {name: [None] * n for name in SCHEMA.names}
    columns.update(
        sample_id=[f"r{i}:a{a}" for i, a in enumerate(anchors)],
        version=[1] * n,
        final=[True] * n,
        ts=(1793491200.0 + np.arange(n)).tolist(),
        request_id=[f"r{i}" for i in range(n)],
        user_id=[f"u{i % 50}" for i in range(n)],
        anchor_id=[f"a{a}" for a in anchors],
        click=click.tolist(),
        conversion=conversion.tolist(),
        watch_seconds=[0.0] * n,
        c_position=position.tolist(),
        u_recent_anchors=[",".join(f"a{a}" for a in rng.integers(0, 40, 5)) for _ in range(n)],
    )
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def settings(**trainer: object) -> Settings:
    return Settings(trainer={"seed": 3, "batch_size": 256, **trainer})  # type: ignore[arg-type]


def test_sequences_are_padded_and_unknown_values_get_the_default_row() -> None:
    vocab = Vocabulary()
    specs = field_specs(settings().trainer)
    encoder = Encoder(specs, vocab)
    table = pa.table({"anchor_id": ["a1", "zz"], "u_recent_anchors": ["a1,a2,a1", ""]})
    from trainer.admission import AdmissionRule

    rule = AdmissionRule(mode="hard", full_threshold=1, incremental_threshold=1)
    vocab.observe("anchor_id", {"a1": 1, "a2": 1}, 0.0, rule, "full")
    batch = encoder.encode(table)
    anchor = [s.name for s in specs if s.kind != "sequence"].index("anchor_id")
    default = vocab.entries("anchor_id").default_row
    a1, a2 = vocab.lookup("anchor_id", ["a1", "a2"]).tolist()
    assert batch.single[:, anchor].tolist() == [a1, default]
    recent = batch.sequences[0]
    assert recent[0, :4].tolist() == [a1, a2, a1, PADDING_ROW]
    assert recent[1].tolist() == [PADDING_ROW] * recent.shape[1]


def fm_term(fields: torch.Tensor) -> torch.Tensor:
    """½((Σv)² − Σv²) over the fields [N, F, D], summed over D: the definition."""
    return 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1)


def reference_logits(learner: Learner, table: pa.Table) -> list[torch.Tensor]:
    """Each tower's logit from the model's definition, written plainly: padded sequences, a
    masked softmax, every field through its own tower (none of the model's shortcuts)."""
    config, batch = learner.config, learner.encoder.encode(table)
    embedding, wide = learner.tables.embedding, learner.tables.wide
    single = embedding[batch.single]
    present = [(s != PADDING_ROW).unsqueeze(2).float() for s in batch.sequences]
    counts = [p.sum(dim=1).clamp(min=1) for p in present]
    parts = list(zip(batch.sequences, present, counts, strict=True))
    pooled = [(embedding[s] * p).sum(dim=1) / c for s, p, c in parts]
    wide_sum = wide[batch.single].sum(dim=1) + sum(
        (wide[s] * p).sum(dim=1) / c for s, p, c in parts
    )
    items = embedding[batch.sequences[config.interest_sequence]]
    mask = batch.sequences[config.interest_sequence] != PADDING_ROW
    logits = []
    for index, tower in enumerate(learner.model.towers.values()):
        attention = tower.interest
        query = attention.query(single[:, config.interest_target])
        keys = items + attention.position[: items.shape[1]]
        scores = torch.einsum("bd,bld->bl", query, keys) * attention.scale
        weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=1) * mask
        interest = torch.einsum("bl,bld->bd", weights, items)
        fields = torch.cat([single, torch.stack([*pooled, interest], dim=1)], dim=1)
        fm = fm_term(fields)
        deep = tower.mlp(torch.cat([fields.flatten(1), batch.dense], dim=1))
        logits.append(tower.bias + wide_sum[:, index] + fm + deep)
    return logits


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4), ("bfloat16", 0.05)])
@pytest.mark.parametrize("distinct", [False, True], ids=["plain", "distinct"])
def test_the_model_computes_its_definition(
    dtype: str, tolerance: float, distinct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of gathering rows at inference: in look-up order (a request), and the
    distinct rows with an inverse index (batches above ``PLAIN_GATHER_MAX`` look-ups)."""
    if distinct:
        monkeypatch.setattr(model, "PLAIN_GATHER_MAX", 0)
    learner = Learner(settings(mlp_dtype=dtype))
    learner.fit(synthetic(3000, 11), "incremental")
    table = synthetic(300, 12)
    # Some users with an empty recent list, some with one item.
    recent = ["", "a1", *table["u_recent_anchors"].to_pylist()[2:]]
    table = table.set_column(
        table.column_names.index("u_recent_anchors"), "u_recent_anchors", pa.array(recent)
    )
    with torch.no_grad():  # weights large enough that every term moves the logits
        learner.tables.embedding.mul_(10.0)
        for tower in learner.model.towers.values():
            tower.interest.position.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    learner.model.eval()
    with torch.inference_mode():
        batch = learner.encoder.encode(table)
        got = learner.model(learner.model.gather(learner.tables, batch, train=False), batch)
        want = reference_logits(learner, table)
    assert float(want[0].std()) > 0.1 and float(want[1].std()) > 0.1
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=tolerance, rtol=0)


def plain_fm(shared: torch.Tensor, interests: list[torch.Tensor]) -> list[torch.Tensor]:
    """The FM term as defined, each tower's fields written out in full."""
    return [fm_term(torch.cat([shared, i.unsqueeze(1)], dim=1)) for i in interests]


@pytest.mark.parametrize("used", [(0, 1), (0,), (1,)])
def test_the_fm_terms_and_their_gradients_are_those_of_the_definition(
    used: tuple[int, ...],
) -> None:
    generator = torch.Generator().manual_seed(5)
    shared = torch.randn(9, 6, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    interests = [
        torch.randn(9, 4, dtype=torch.float64, generator=generator, requires_grad=True)
        for _ in range(2)
    ]
    inputs = (shared, *interests)
    assert torch.autograd.gradcheck(lambda *x: FactorizationMachine.apply(*x), inputs)
    got, want = FactorizationMachine.apply(*inputs), plain_fm(shared, interests)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    # A loss over some towers only (the others' gradients arrive as zeros).
    weights = [torch.randn(9, dtype=torch.float64, generator=generator) for _ in used]
    got_grads = torch.autograd.grad(
        sum((got[t] * w).sum() for t, w in zip(used, weights, strict=True)), inputs
    )
    want_grads = torch.autograd.grad(
        sum((want[t] * w).sum() for t, w in zip(used, weights, strict=True)),
        inputs,
        allow_unused=True,
    )
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w)


def test_distinct_rows_gather_and_sum_gradients_like_index_select() -> None:
    """A training batch's look-ups: the distinct ids, and ``Spread``, whose backward is one
    sparse product instead of index_select's index_add; same rows, same gradients."""
    generator = torch.Generator().manual_seed(3)
    looked_up = torch.randint(0, 40, (500,), generator=generator)
    rows, inverse, spread = distinct(looked_up, spread=True)
    want_rows, want_inverse = torch.unique(looked_up, return_inverse=True)
    assert torch.equal(rows, want_rows) and torch.equal(inverse, want_inverse)
    assert distinct(looked_up, spread=False)[2] is None
    table = torch.randn(len(rows), 3, generator=generator)
    weights = torch.randn(len(looked_up), 3, generator=generator)
    grads = []
    for gather in (
        lambda t: t.index_select(0, inverse),
        lambda t: Spread.apply(t, inverse, spread),
    ):
        leaf = table.clone().requires_grad_(True)
        values = gather(leaf)
        torch.testing.assert_close(values, table[inverse])
        (values * weights).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_scores_follow_the_weights_as_they_change(dtype: str) -> None:
    """Inference reads the MLP weights joined and cast once (``ESMM._served``); after
    training steps, in a copy, and after an in-place write, it must read the new ones, as
    the autograd path (which reads the parameters themselves) does."""
    learner = Learner(settings(mlp_dtype=dtype))
    train, test = synthetic(3000, 4), synthetic(300, 5)
    learner.fit(train, "incremental")
    batch = learner.encoder.encode(test)

    def served_as_defined(learner: Learner) -> np.ndarray:
        served = learner.predict_batch(batch)[0]
        with torch.enable_grad():
            gathered = learner.model.gather(learner.tables, batch, train=False)
            logit = learner.model(gathered, batch)[0].detach()
        torch.testing.assert_close(served, torch.sigmoid(logit).numpy(), atol=1e-6, rtol=0)
        return served

    before = served_as_defined(learner)
    learner.fit(train, "incremental")  # torch's fused Adam: no version counter moves
    after = served_as_defined(learner)
    assert np.abs(after - before).max() > 1e-3
    copy = learner.clone()
    with torch.no_grad():
        for parameter in copy.model.parameters():
            parameter.mul_(0.5)
    assert np.abs(served_as_defined(copy) - after).max() > 1e-3
    with torch.no_grad():
        learner.model.tower_list()[0].mlp.out.bias.sub_(1.0)
    assert np.abs(served_as_defined(learner) - after).max() > 1e-3


def test_the_learner_learns_which_anchors_get_clicked() -> None:
    learner = Learner(settings())
    train, test = synthetic(20000, 1), synthetic(5000, 2)
    before = learner.evaluate(test)["auc_ctr"]
    for _ in range(2):
        learner.fit(train, "incremental")
    after = learner.evaluate(test)
    assert after["auc_ctr"] > 0.75 > before + 0.1
    assert after["auc_ctcvr"] > 0.75


def test_a_step_moves_only_the_rows_the_batch_touched() -> None:
    learner = Learner(settings())
    table = synthetic(2000, 3)
    learner.observe(table, "incremental")
    before = learner.tables.embedding.clone()
    batch = learner.encoder.encode(table.slice(0, 64))
    learner.step(batch)
    touched = set(
        torch.unique(torch.cat([batch.single.flatten(), batch.sequences[0].flatten()])).tolist()
    )
    changed = set(torch.nonzero((learner.tables.embedding != before).any(dim=1)).flatten().tolist())
    assert changed and changed <= touched
    assert PADDING_ROW not in changed
    assert learner.tables.embedding[PADDING_ROW].abs().sum() == 0


def test_restore_gives_the_same_predictions_and_the_same_next_step() -> None:
    import pyarrow.parquet as pq
    from safetensors.torch import load

    from trainer.serialize import learner_files

    learner = Learner(settings())
    learner.fit(synthetic(3000, 4), "incremental")
    files = learner_files(learner)
    again = Learner.restore(
        learner.settings, learner.config, load(files["model.safetensors"]),
        pq.read_table(pa.BufferReader(files["vocab.parquet"])),
    )  # fmt: skip
    test = synthetic(1000, 5)
    np.testing.assert_allclose(learner.predict(test)[2], again.predict(test)[2], rtol=1e-6)
    more = synthetic(1000, 6)
    learner.fit(more, "incremental")
    again.fit(more, "incremental")
    np.testing.assert_allclose(learner.predict(test)[0], again.predict(test)[0], rtol=1e-4)


def test_the_separate_objective_trains_the_cvr_tower_on_clicks_only() -> None:
    learner = Learner(settings(objective="separate"))
    learner.fit(synthetic(5000, 7), "incremental")
    p_ctr, p_cvr, p_ctcvr = learner.predict(synthetic(500, 8))
    np.testing.assert_allclose(p_ctcvr, p_ctr * p_cvr, rtol=1e-6)


def test_scorer_rows_encode_like_sample_rows() -> None:
    learner = Learner(settings())
    table = synthetic(2000, 9)
    learner.fit(table, "incremental")
    rows = table.slice(0, 20).to_pylist()
    names = [s.name for s in learner.specs]
    from_rows = learner.predict(rows_table(rows, names))[2]
    np.testing.assert_allclose(from_rows, learner.predict(table.slice(0, 20))[2], rtol=1e-6)


def test_a_requests_columns_encode_like_its_rows_as_a_table() -> None:
    """The scorer reads a request's two parts without building a table; it must get the
    batch (and the counts) the table of the same rows gives, odd values included."""
    learner = Learner(settings())
    learner.fit(synthetic(2000, 9), "incremental")
    long_history = ",".join(f"a{i % 40}" for i in range(70))  # longer than the field keeps
    user = {"u_ctr_decayed": float("nan"), "u_recent_anchors": long_history}
    anchors = [
        {"a_viewers": 12.0, "a_status": "live"},
        {"a_viewers": None, "a_status": 3.0},
        {"a_viewers": float("-inf"), "not_a_feature": "x"},
    ]  # and a fourth anchor with nothing stored
    profiles = {"a1": {"p_anchor_tags": "t1,t2,t1"}, "a20": {"p_anchor_tags": ""}}
    ids = ["a1", "a20", "nobody", "a3"]
    rows = request_rows("u7", ids, user, anchors, [], {}, profiles, "home")
    rows.shared["u_clicks_5m"] = None  # type: ignore[index]
    rows.shared["u_impressions_1h"] = float("inf")  # type: ignore[index]
    rows.own["ua_clicks_7d"][2] = None  # type: ignore[index]
    names = [s.name for s in learner.specs]
    table = rows_table(
        [{**rows.row(i), "user_id": "u7", "anchor_id": a} for i, a in enumerate(rows.anchor_ids)],
        names,
    )
    encoder = learner.encoder
    mine, theirs = encoder.encode(RequestColumns(rows)), encoder.encode(table)
    assert torch.equal(mine.single, theirs.single)
    for a, b in zip(mine.sequences, theirs.sequences, strict=True):
        assert torch.equal(a.expand_as(b), b)
    # The user's lists stay one row for the request; the anchors' tags are one per candidate.
    assert [mine.shares(s) for s in mine.sequences] == [True, True, False]
    assert torch.equal(mine.dense, theirs.dense)
    assert torch.equal(mine.click, theirs.click) and len(mine) == 4
    assert encoder.counts(RequestColumns(rows)) == encoder.counts(table)


@pytest.mark.parametrize("history", ["a3,a1,a7,a3,a12", ""])
def test_a_request_scores_as_its_rows_do_one_by_one(history: str) -> None:
    """A request's shared user lists are read once for all candidates (pooled once, one
    attention product); the scores must be those of the same rows as a table, where every
    row carries its own copy, including a user with no history at all."""
    learner = Learner(settings(mlp_dtype="float32"))
    learner.fit(synthetic(2000, 11), "incremental")
    with torch.no_grad():  # a few steps barely move them from zero: make them count
        for tower in learner.model.tower_list():
            tower.interest.position.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    ids = [f"a{i}" for i in range(30)]
    anchors = [{"a_viewers": float(i * 7), "a_live": float(i % 2)} for i in range(30)]
    profiles = {f"a{i}": {"p_anchor_tags": f"t{i % 3},t{i % 5}"} for i in range(0, 30, 2)}
    user = {"u_recent_anchors": history, "u_ctr_decayed": 0.3}
    rows = request_rows(
        "u7", ids, user, anchors, [], {"p_user_categories": "c1,c2"}, profiles, "home"
    )
    names = [s.name for s in learner.specs]
    table = rows_table(
        [{**rows.row(i), "user_id": "u7", "anchor_id": a} for i, a in enumerate(ids)], names
    )
    request = learner.encoder.encode(RequestColumns(rows))
    assert request.shares(request.sequences[0])
    for mine, theirs in zip(learner.predict_batch(request), learner.predict(table), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)


def test_weights_driven_to_zero_are_left_out_of_the_published_vocabulary() -> None:
    learner = Learner(settings())
    learner.fit(synthetic(2000, 10), "incremental")
    row = learner.vocab.entries("anchor_id").rows["a3"]
    learner.tables.embedding[row] = 0.0
    learner.tables.wide[row] = 0.0
    assert row in learner.dropped_rows()
    published = learner.vocab.to_table(learner.dropped_rows())
    assert (
        "a3" not in published.filter(pa.compute.equal(published["kind"], "id"))["value"].to_pylist()
    )


@pytest.mark.parametrize("bad", ["interest_target", "interest_sequence"])
def test_a_wrong_interest_configuration_fails_loudly(bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        field_specs(settings(**{bad: "c_position"}).trainer)
