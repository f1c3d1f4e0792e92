"""The request-time snapshot cell: each candidate's row read back as served, in a few KB."""

from __future__ import annotations

import orjson

from features.request import RequestRows, request_rows
from snapshots.store import decode_snapshot, encode_snapshot


def served(candidates: int) -> RequestRows:
    recent = ",".join(f"a{i}" for i in range(50))
    anchors = [
        {"a_viewers": float(i), "a_status": "pk" if i % 3 else None} for i in range(candidates)
    ]
    pairs = [{"ua_clicks_7d": 1.0} if i % 4 == 0 else None for i in range(candidates)]
    return request_rows(
        "u1",
        [f"a{i}" for i in range(candidates)],
        {"u_ctr_decayed": 0.2, "u_recent_anchors": recent},
        anchors,
        pairs,
        {"gender": "f"},
        {"a1": {"p_anchor_category": "music"}},
        "discover",
    )


def test_each_candidate_reads_back_its_served_row_without_none_values() -> None:
    rows = served(12)
    # a name in both parts is read back with the candidate's own value, as RequestRows.row
    rows = RequestRows(rows.user_id, rows.anchor_ids, {**rows.shared, "x": "shared"}, {
        **rows.own, "x": ["own", None, *["own"] * 10]
    })  # fmt: skip
    expected = {
        anchor: {k: v for k, v in rows.row(i).items() if v is not None}
        for i, anchor in enumerate(rows.anchor_ids)
    }
    snapshot = decode_snapshot(encode_snapshot(rows))
    assert snapshot == expected
    assert snapshot["a0"]["x"] == "own"
    assert "x" not in snapshot["a1"]  # None in the candidate's part hides the shared value
    assert snapshot["a0"]["c_scene"] == "discover"
    assert snapshot["a1"]["p_anchor_category"] == "music"
    assert "a_status" not in snapshot["a0"] and snapshot["a1"]["a_status"] == "pk"


def test_a_cell_holds_the_shared_part_once() -> None:
    """The cell of 200 candidates whose user has 50 recent anchors: written whole per
    candidate it was ~85 KB of JSON; the shared part once, compressed, it is a few KB."""
    rows = served(200)
    whole = orjson.dumps({a: rows.row(i) for i, a in enumerate(rows.anchor_ids)})
    cell = encode_snapshot(rows)
    assert len(cell) * 10 < len(whole)


def test_cells_in_the_earlier_layout_are_still_read() -> None:
    """A scorer before this one wrote plain JSON, one row of values per candidate."""
    cell = orjson.dumps(
        {"names": ["a_viewers", "c_scene"], "rows": {"a1": [3.0, "home"], "a2": [None, "home"]}}
    )
    assert decode_snapshot(cell) == {
        "a1": {"a_viewers": 3.0, "c_scene": "home"},
        "a2": {"c_scene": "home"},
    }
