"""decode_cursor: one signed cursor to one typed position, or one 400 for anything else."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from bastion.errors import BadRequest
from bastion.pagination import (
    InvalidCursorProblem,
    decode_cursor,
    read_sequence,
    read_time_id,
    time_id_values,
)
from bastion.security.cursors import CursorCodec

CODEC = CursorCodec(b"k" * 32)
MOMENT = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
ITEM = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_a_time_id_position_goes_round_trip() -> None:
    cursor = CODEC.encode("listing", time_id_values((MOMENT, ITEM)))
    assert decode_cursor(CODEC, "listing", cursor, read_time_id) == (MOMENT, ITEM)


def test_a_sequence_position_goes_round_trip() -> None:
    assert decode_cursor(CODEC, "audit", CODEC.encode("audit", [7]), read_sequence) == 7


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "a.b",
        CODEC.encode("another listing", time_id_values((MOMENT, ITEM))),
        CODEC.encode("listing", time_id_values((MOMENT, ITEM))) + "A",
    ],
)
def test_a_cursor_not_signed_for_the_purpose_is_a_400(cursor: str) -> None:
    with pytest.raises(InvalidCursorProblem) as refused:
        decode_cursor(CODEC, "listing", cursor, read_time_id)
    assert isinstance(refused.value, BadRequest)
    assert refused.value.detail == "The cursor is not valid; start again from the first page."


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["x", "y"],
        ["2026-01-01T00:00:00", str(ITEM)],  # naive
        ["2026-01-01T00:00:00+00:00", "not-a-uuid"],
        [1, 2],
        ["2026-01-01T00:00:00+00:00", str(ITEM), "extra"],
    ],
)
def test_a_signed_time_id_cursor_of_another_shape_is_a_400(values: list[Any]) -> None:
    with pytest.raises(InvalidCursorProblem):
        decode_cursor(CODEC, "listing", CODEC.encode("listing", values), read_time_id)


@pytest.mark.parametrize("values", [[], [0], [-1], [True], ["1"], [1.0], [1, 2]])
def test_a_signed_sequence_cursor_of_another_shape_is_a_400(values: list[Any]) -> None:
    with pytest.raises(InvalidCursorProblem):
        decode_cursor(CODEC, "audit", CODEC.encode("audit", values), read_sequence)


def test_a_listing_may_name_its_own_detail() -> None:
    with pytest.raises(InvalidCursorProblem) as refused:
        decode_cursor(CODEC, "listing", "garbage", read_time_id, detail="Not for this one.")
    assert refused.value.detail == "Not for this one."
