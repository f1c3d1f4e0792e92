"""Which sample columns the model reads, and how: IDs, bucketed numbers, sequences.

The default field list comes from the feature catalogue (``features.catalog``) plus the
``user_id`` and ``anchor_id`` columns; ``[trainer.fields.<column>]`` in the TOML overrides or
adds a column, ``exclude_fields`` drops some, so the trainer runs on any Parquet sample set that
follows the sample schema's label columns.

Every field ends up as rows of one embedding table: an ID field's values and a sequence
field's items through a vocabulary (fields that share IDs — ``anchor_id`` and the user's recent
anchors — share one), a numeric field through its bucket. Numeric fields also enter the towers
as a dense value, ``sign(x) · log(1 + |x|)``.

>>> specs = field_specs(TrainerSettings())
>>> [s.name for s in specs if s.kind == "sequence"]
['u_recent_anchors', 'p_user_categories', 'p_anchor_tags']
>>> by_name(specs)["u_recent_anchors"].vocab
'anchor_id'
>>> bucket_of((0.0, 1.0, 10.0), 5.0)
2
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

from features.catalog import CATALOG
from liverank.settings import TrainerSettings

Kind = Literal["id", "numeric", "sequence"]

DEFAULT_BOUNDARIES: tuple[float, ...] = (
    -0.5, 0.0, 1e-3, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0,
    35.0, 60.0, 100.0, 200.0, 400.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, 604800.0,
)  # fmt: skip
"""Bucket edges that fit counts, rates and seconds alike (-1 means "never" in the catalogue)."""

SHARED_VOCABS = {
    "u_recent_anchors": "anchor_id",
    "p_user_categories": "category",
    "p_anchor_category": "category",
    "p_anchor_tags": "tag",
}


@dataclass(frozen=True)
class FieldSpec:
    name: str  # the sample column
    kind: Kind
    vocab: str  # vocabulary the values go through ("bucket:<name>" for numeric fields)
    boundaries: tuple[float, ...] = ()
    max_length: int = 0


def bucket_of(boundaries: tuple[float, ...], value: float) -> int:
    """Index of ``value``'s bucket: 0 below the first edge, len(boundaries) above the last."""
    return bisect.bisect_right(boundaries, value)


def field_specs(settings: TrainerSettings) -> list[FieldSpec]:
    """The fields the model reads, in a fixed order: IDs and numbers first, then sequences."""
    specs: dict[str, FieldSpec] = {
        "user_id": FieldSpec("user_id", "id", "user_id"),
        "anchor_id": FieldSpec("anchor_id", "id", "anchor_id"),
    }
    for feature in CATALOG:
        if feature.kind == "numeric":
            spec = FieldSpec(feature.name, "numeric", f"bucket:{feature.name}", DEFAULT_BOUNDARIES)
        elif feature.kind == "categorical":
            spec = FieldSpec(feature.name, "id", SHARED_VOCABS.get(feature.name, feature.name))
        else:
            length = settings.interest_length if feature.name == settings.interest_sequence else 8
            vocab = SHARED_VOCABS.get(feature.name, feature.name)
            spec = FieldSpec(feature.name, "sequence", vocab, max_length=length)
        specs[feature.name] = spec
    for name, override in settings.fields.items():
        kind = override.kind
        if kind == "numeric":
            vocab = f"bucket:{name}"
        else:
            vocab = override.vocab or SHARED_VOCABS.get(name, name)
        specs[name] = FieldSpec(
            name,
            kind,
            vocab,
            tuple(override.boundaries or DEFAULT_BOUNDARIES) if kind == "numeric" else (),
            (override.max_length or 8) if kind == "sequence" else 0,
        )
    for name in settings.exclude_fields:
        specs.pop(name, None)
    ordered = [s for s in specs.values() if s.kind != "sequence"]
    ordered += [s for s in specs.values() if s.kind == "sequence"]
    _check(ordered, settings)
    return ordered


def _check(specs: list[FieldSpec], settings: TrainerSettings) -> None:
    named = by_name(specs)
    target = named.get(settings.interest_target)
    sequence = named.get(settings.interest_sequence)
    if target is None or target.kind != "id":
        raise ValueError(f"interest_target {settings.interest_target!r} must be an id field")
    if sequence is None or sequence.kind != "sequence":
        raise ValueError(f"interest_sequence {settings.interest_sequence!r} must be a sequence")
    if sequence.vocab != target.vocab:
        raise ValueError(
            f"the interest sequence {sequence.name!r} must share the vocabulary of "
            f"{target.name!r} (vocab {target.vocab!r}), got {sequence.vocab!r}"
        )


def by_name(specs: list[FieldSpec]) -> dict[str, FieldSpec]:
    return {s.name: s for s in specs}
