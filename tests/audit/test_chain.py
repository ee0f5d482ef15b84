"""The hash-chained audit log: what the hash covers, appends on every backend, and each way of
tampering with the stored chain, which ``verify_chain`` and ``bastion audit verify`` must catch."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import Executable, Row, delete, func, insert, select, update
from starlette.requests import HTTPConnection

from bastion.audit import (
    GENESIS_HASH,
    AuditChainError,
    AuditEventType,
    AuditRecord,
    ChainVerification,
    Outcome,
    chain_hash,
    list_events,
    record_event,
    verify_chain,
)
from bastion.audit.context import AuditContext
from bastion.audit.events import canonical_bytes
from bastion.audit.service import VERIFY_BATCH
from bastion.dependencies import DbSession
from bastion.middleware.request_id import REQUEST_ID_SCOPE_KEY
from bastion.storage import Database
from bastion.storage.tables import AuditChainHead, AuditEvent
from tests.conftest import make_settings
from tests.servers.postgres import free_port
from tests.test_cli import run_bastion

MOMENT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
USER = "4f6b1c2e-0000-4000-8000-000000000001"
OTHER = "4f6b1c2e-0000-4000-8000-000000000002"


def _record(**changes: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "occurred_at": MOMENT,
        "type": AuditEventType.LOGIN_SUCCESS,
        "outcome": Outcome.SUCCESS,
        "actor_id": USER,
        "subject_id": USER,
        "client_ip": "203.0.113.7",
        "request_id": "req-1",
        "details": {"method": "password", "attempt": 1, "mfa": False, "note": None},
    }
    values.update(changes)
    return AuditRecord(**values)


# --- the pure part: records and the hash ----------------------------------------------------


def test_the_event_types_are_exactly_the_contract_s() -> None:
    assert {member.value for member in AuditEventType} == {
        "registration", "login_success", "login_failure", "lockout", "token_refresh",
        "refresh_reuse", "logout", "revocation", "password_change", "role_change", "disable",
        "unlock", "access_denied", "csrf_refusal", "mfa_challenge", "mfa_enabled",
        "mfa_disabled", "mfa_failure", "recovery_code_used", "recovery_codes_regenerated",
        "email_verification_requested", "email_verified", "password_reset_requested",
        "password_reset_completed",
    }
    assert {member.value for member in Outcome} == {"success", "failure", "denied"}


def test_the_hash_is_sha256_over_the_sorted_canonical_document() -> None:
    document = {
        "seq": 1,
        "prev_hash": GENESIS_HASH,
        "occurred_at": "2026-11-30T12:00:00.123456+00:00",
        "type": "login_success",
        "outcome": "success",
        "actor_id": USER,
        "subject_id": USER,
        "client_ip": "203.0.113.7",
        "request_id": "req-1",
        "details": {"attempt": 1, "method": "password", "mfa": False, "note": None},
    }
    expected = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    assert canonical_bytes(GENESIS_HASH, 1, _record()) == expected
    assert chain_hash(GENESIS_HASH, 1, _record()) == hashlib.sha256(expected).hexdigest()


def test_naive_and_offset_timestamps_hash_as_the_same_utc_instant() -> None:
    naive = MOMENT.replace(tzinfo=None)  # as SQLite reads it back
    offset = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert _record(occurred_at=naive).occurred_at == MOMENT
    assert _record(occurred_at=offset).occurred_at.utcoffset() == timedelta(0)
    reference = chain_hash(GENESIS_HASH, 1, _record())
    assert chain_hash(GENESIS_HASH, 1, _record(occurred_at=naive)) == reference
    assert chain_hash(GENESIS_HASH, 1, _record(occurred_at=offset)) == reference


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": MOMENT + timedelta(microseconds=1)},
        {"type": AuditEventType.LOGOUT},
        {"outcome": Outcome.FAILURE},
        {"actor_id": None},
        {"subject_id": OTHER},
        {"client_ip": "203.0.113.8"},
        {"request_id": None},
        {"details": {"method": "password", "attempt": 2, "mfa": False, "note": None}},
        {"details": {"method": "password", "attempt": True, "mfa": False, "note": None}},
        {"details": {}},
    ],
)
def test_every_field_is_covered_by_the_hash(change: dict[str, Any]) -> None:
    assert chain_hash(GENESIS_HASH, 1, _record(**change)) != chain_hash(GENESIS_HASH, 1, _record())


def test_seq_and_prev_hash_are_covered_by_the_hash() -> None:
    reference = chain_hash(GENESIS_HASH, 1, _record())
    assert chain_hash(GENESIS_HASH, 2, _record()) != reference
    assert chain_hash("1" * 64, 1, _record()) != reference


def test_strings_become_enums_and_unknown_ones_are_refused() -> None:
    record = _record(type="lockout", outcome="denied")
    assert record.type is AuditEventType.LOCKOUT
    assert record.outcome is Outcome.DENIED
    with pytest.raises(ValueError, match="not_a_type"):
        _record(type="not_a_type")


@pytest.mark.parametrize(
    ("details", "error"),
    [
        ({"ratio": 0.5}, TypeError),
        ({"nested": {"a": 1}}, TypeError),
        ({"list": [1]}, TypeError),
        ({"big": 2**63}, ValueError),
        ({"": "empty key"}, ValueError),
        ({"nul": "a\x00b"}, ValueError),
        ({"surrogate": "\udc80"}, ValueError),
    ],
)
def test_details_that_would_not_round_trip_are_refused(
    details: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        _record(details=details)


def test_a_float_slipped_in_after_creation_is_refused_by_the_hash() -> None:
    record = _record()
    record.details["ratio"] = 0.5  # type: ignore[assignment]
    with pytest.raises(TypeError):
        chain_hash(GENESIS_HASH, 1, record)


@pytest.mark.parametrize(
    "change", [{"actor_id": "x" * 37}, {"client_ip": "1" * 46}, {"request_id": "r" * 65}]
)
def test_fields_wider_than_their_columns_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="longer than"):
        _record(**change)


def test_records_are_immutable() -> None:
    record = _record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.actor_id = OTHER  # type: ignore[misc]


@pytest.mark.parametrize(("prev_hash", "seq"), [("0" * 63, 1), ("A" * 64, 1), (GENESIS_HASH, 0)])
def test_the_hash_wants_a_real_predecessor_and_position(prev_hash: str, seq: int) -> None:
    with pytest.raises(ValueError):
        chain_hash(prev_hash, seq, _record())


def test_audit_context_without_a_peer() -> None:
    without_peer: dict[str, Any] = {"type": "http", "headers": [], REQUEST_ID_SCOPE_KEY: "abc"}
    assert AuditContext.of(HTTPConnection(without_peer)) == AuditContext(None, None, "abc")
    ipv6: dict[str, Any] = {"type": "http", "headers": [], "client": ("2001:db8::1", 4321)}
    assert AuditContext.of(HTTPConnection(ipv6)) == AuditContext(None, "2001:db8::1", None)


# --- on every backend -------------------------------------------------------------------------


def _database(app: FastAPI) -> Database:
    database: Database = app.state.bastion.database
    return database


def _event(index: int) -> AuditRecord:
    kinds = list(AuditEventType)
    return _record(
        occurred_at=MOMENT + timedelta(seconds=index),
        type=kinds[index % len(kinds)],
        outcome=Outcome.SUCCESS if index % 2 else Outcome.FAILURE,
        actor_id=USER if index % 3 else None,
        subject_id=OTHER if index % 2 else USER,
        request_id=f"req-{index}",
        details={"index": index, "even": index % 2 == 0, "label": f"é-{index}"},
    )


async def _append(app: FastAPI, count: int) -> list[int]:
    seqs = []
    for index in range(count):
        async with _database(app).transaction() as session:
            seqs.append(await record_event(session, _event(index)))
    return seqs


async def _verify(app: FastAPI, batch_size: int = VERIFY_BATCH) -> ChainVerification:
    async with _database(app).transaction() as session:
        return await verify_chain(session, batch_size=batch_size)


async def _tamper(app: FastAPI, *statements: Executable) -> None:
    """Raw writes past the audit service, as someone with database access could make them."""
    async with _database(app).engine.begin() as connection:
        for statement in statements:
            await connection.execute(statement)


async def _rows(app: FastAPI) -> list[Row[Any]]:
    async with _database(app).engine.connect() as connection:
        result = await connection.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq))
        return list(result.all())


def _assert_broken(verdict: ChainVerification, seq: int, reason: str) -> None:
    assert not verdict.ok
    assert verdict.broken_seq == seq, verdict
    assert verdict.reason is not None
    assert reason in verdict.reason, verdict.reason
    assert verdict.checked == max(seq - 1, 0)


async def test_an_empty_chain_is_intact(app: FastAPI) -> None:
    assert await _verify(app) == ChainVerification(ok=True, checked=0)


@pytest.mark.parametrize("batch_size", [VERIFY_BATCH, 2, 1])
async def test_appended_events_form_an_intact_chain(app: FastAPI, batch_size: int) -> None:
    assert await _append(app, 7) == [1, 2, 3, 4, 5, 6, 7]
    assert await _verify(app, batch_size) == ChainVerification(ok=True, checked=7)
    rows = await _rows(app)
    assert len({row.hash for row in rows}) == 7
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    for index, row in enumerate(rows):
        assert row.hash == chain_hash(row.prev_hash, row.seq, _event(index))
        assert row.details == _event(index).details
    async with _database(app).engine.connect() as connection:
        head = (await connection.execute(select(AuditChainHead.__table__))).one()
    assert (head.id, head.last_seq, head.last_hash) == (1, 7, rows[-1].hash)


@pytest.mark.parametrize(
    "change",
    [
        {"details": {"index": 2, "even": True, "label": "harmless"}},
        {"type": "logout"},
        {"outcome": "success"},
        {"actor_id": OTHER},
        {"subject_id": None},
        {"client_ip": "198.51.100.1"},
        {"request_id": "req-x"},
        {"occurred_at": MOMENT + timedelta(days=1)},
        {"type": "no_such_type"},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_an_edited_event_is_detected(app: FastAPI, change: dict[str, Any]) -> None:
    await _append(app, 5)
    await _tamper(app, update(AuditEvent).where(AuditEvent.seq == 3).values(**change))
    _assert_broken(await _verify(app), 3, "edited")


@pytest.mark.parametrize("batch_size", [VERIFY_BATCH, 2])
async def test_a_deleted_event_in_the_middle_is_detected(app: FastAPI, batch_size: int) -> None:
    await _append(app, 5)
    await _tamper(app, delete(AuditEvent).where(AuditEvent.seq == 3))
    _assert_broken(await _verify(app, batch_size), 3, "event 3 is missing")


async def test_a_deleted_first_event_is_detected(app: FastAPI) -> None:
    await _append(app, 3)
    await _tamper(app, delete(AuditEvent).where(AuditEvent.seq == 1))
    _assert_broken(await _verify(app), 1, "event 1 is missing")


async def test_truncation_at_the_end_is_detected(app: FastAPI) -> None:
    await _append(app, 5)
    await _tamper(app, delete(AuditEvent).where(AuditEvent.seq >= 4))
    _assert_broken(await _verify(app), 4, "truncated")


async def test_deleting_every_event_is_detected(app: FastAPI) -> None:
    await _append(app, 3)
    await _tamper(app, delete(AuditEvent))
    _assert_broken(await _verify(app), 1, "truncated")


async def test_swapped_events_are_detected(app: FastAPI) -> None:
    await _append(app, 5)
    await _tamper(
        app,
        update(AuditEvent).where(AuditEvent.seq == 2).values(seq=-2),
        update(AuditEvent).where(AuditEvent.seq == 4).values(seq=2),
        update(AuditEvent).where(AuditEvent.seq == -2).values(seq=4),
    )
    _assert_broken(await _verify(app), 2, "prev_hash does not match event 1")


async def test_an_edit_with_its_own_hash_recomputed_breaks_the_next_link(app: FastAPI) -> None:
    await _append(app, 5)
    row = (await _rows(app))[2]
    forged = dataclasses.replace(_event(2), details={"index": 2, "label": "nothing happened"})
    await _tamper(
        app,
        update(AuditEvent)
        .where(AuditEvent.seq == 3)
        .values(details=forged.details, hash=chain_hash(row.prev_hash, 3, forged)),
    )
    _assert_broken(await _verify(app), 4, "prev_hash does not match event 3")


async def test_a_rewritten_last_event_no_longer_matches_the_head(app: FastAPI) -> None:
    await _append(app, 3)
    row = (await _rows(app))[2]
    forged = dataclasses.replace(_event(2), outcome=Outcome.SUCCESS)
    await _tamper(
        app,
        update(AuditEvent)
        .where(AuditEvent.seq == 3)
        .values(outcome="success", hash=chain_hash(row.prev_hash, 3, forged)),
    )
    _assert_broken(await _verify(app), 3, "chain head")


async def test_an_event_slipped_in_past_the_head_is_detected(app: FastAPI) -> None:
    await _append(app, 3)
    last = (await _rows(app))[-1]
    forged = _event(3)
    await _tamper(
        app,
        insert(AuditEvent).values(
            seq=4, occurred_at=forged.occurred_at, type=forged.type.value,
            outcome=forged.outcome.value, actor_id=forged.actor_id,
            subject_id=forged.subject_id, client_ip=forged.client_ip,
            request_id=forged.request_id, details=forged.details, prev_hash=last.hash,
            hash=chain_hash(last.hash, 4, forged),
        ),
    )
    verdict = await _verify(app)
    assert (verdict.ok, verdict.broken_seq, verdict.checked) == (False, 4, 3)
    assert verdict.reason is not None
    assert "not recorded in the chain head" in verdict.reason


async def test_an_event_before_the_first_is_detected(app: FastAPI) -> None:
    await _append(app, 2)
    first = (await _rows(app))[0]
    await _tamper(
        app,
        insert(AuditEvent).values(
            seq=0, occurred_at=MOMENT, type="login_success", outcome="success",
            details={}, prev_hash=GENESIS_HASH, hash="f" * 64,
        ),
    )
    verdict = await _verify(app)
    assert (verdict.ok, verdict.broken_seq, verdict.checked) == (False, 0, 0)
    assert first.seq == 1


async def test_a_missing_head_stops_appends_and_fails_verification(app: FastAPI) -> None:
    await _append(app, 2)
    await _tamper(app, delete(AuditChainHead))
    _assert_broken(await _verify(app), 3, "head is missing")
    with pytest.raises(AuditChainError, match="bastion migrate"):
        await _append(app, 1)


async def test_a_rolled_back_append_leaves_no_trace(app: FastAPI) -> None:
    await _append(app, 2)

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned):
        async with _database(app).transaction() as session:
            assert await record_event(session, _event(9)) == 3
            raise Abandoned
    assert len(await _rows(app)) == 2
    assert await _verify(app) == ChainVerification(ok=True, checked=2)
    assert await _append(app, 1) == [3]
    assert await _verify(app) == ChainVerification(ok=True, checked=3)


async def test_several_events_in_one_transaction_chain_in_order(app: FastAPI) -> None:
    async with _database(app).transaction() as session:
        seqs = [await record_event(session, _event(index)) for index in range(3)]
    assert seqs == [1, 2, 3]
    assert await _verify(app) == ChainVerification(ok=True, checked=3)


async def test_concurrent_appends_never_fork_the_chain(app: FastAPI) -> None:
    async def append_one(index: int) -> int:
        async with _database(app).transaction() as session:
            return await record_event(session, _event(index))

    seqs = await asyncio.gather(*(append_one(index) for index in range(20)))
    assert sorted(seqs) == list(range(1, 21))
    assert await _verify(app) == ChainVerification(ok=True, checked=20)


async def test_verification_during_appends_sees_one_consistent_snapshot(app: FastAPI) -> None:
    await _append(app, 10)

    async def append_later(index: int) -> int:
        await asyncio.sleep(0.001 * index)
        async with _database(app).transaction() as session:
            return await record_event(session, _event(index))

    verdict, *_ = await asyncio.gather(
        _verify(app, batch_size=1), *(append_later(index) for index in range(10))
    )
    assert isinstance(verdict, ChainVerification)
    assert verdict.ok, verdict
    assert verdict.checked >= 10
    assert await _verify(app) == ChainVerification(ok=True, checked=20)


async def test_list_events_newest_first_with_filters_and_cursor(app: FastAPI) -> None:
    await _append(app, 6)  # index i has seq i + 1
    async with _database(app).transaction() as session:
        everything = await list_events(session, limit=100)
        page = await list_events(session, limit=2)
        next_page = await list_events(session, limit=2, before_seq=page[-1].seq)
        lockouts = await list_events(session, type=AuditEventType.LOCKOUT, limit=100)
        actor = await list_events(session, user_id=USER, limit=100)
        recent = await list_events(session, since=MOMENT + timedelta(seconds=4), limit=100)
        recent_offset = await list_events(
            session,
            since=(MOMENT + timedelta(seconds=4)).astimezone(timezone(timedelta(hours=-5))),
            limit=100,
        )
    assert [event.seq for event in everything] == [6, 5, 4, 3, 2, 1]
    assert [event.seq for event in page] == [6, 5]
    assert [event.seq for event in next_page] == [4, 3]
    assert [event.seq for event in lockouts] == [4]  # the fourth type, index 3
    # USER is the actor of indexes not divisible by 3 and the subject of the even ones.
    assert [event.seq for event in actor] == [6, 5, 3, 2, 1]
    assert [event.seq for event in recent] == [6, 5]
    assert [event.seq for event in recent_offset] == [6, 5]
    newest = everything[0]
    assert newest.occurred_at == MOMENT + timedelta(seconds=5)
    assert newest.occurred_at.tzinfo is not None
    assert newest.type == _event(5).type.value
    assert newest.details == _event(5).details


async def test_an_event_recorded_for_a_request_carries_its_ip_and_request_id(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.post("/probe/audit")
    async def denied(request: Request, session: DbSession) -> dict[str, int]:
        record = AuditContext.of(request).as_actor(USER).event(
            AuditEventType.ACCESS_DENIED, Outcome.DENIED, path=request.url.path
        )
        return {"seq": await record_event(session, record)}

    response = await client.post("/probe/audit", headers={"X-Request-ID": "probe-42"})
    assert response.status_code == 200
    assert response.json() == {"seq": 1}
    async with _database(app).transaction() as session:
        (event,) = await list_events(session, limit=10)
    assert (event.type, event.outcome, event.actor_id) == ("access_denied", "denied", USER)
    assert event.client_ip == "127.0.0.1"
    assert event.request_id == "probe-42"
    assert event.details == {"path": "/probe/audit"}
    assert datetime.now(UTC) - event.occurred_at < timedelta(minutes=1)
    assert await _verify(app) == ChainVerification(ok=True, checked=1)


# --- the command --------------------------------------------------------------------------------


async def _append_in_process(data_dir: Path, count: int) -> None:
    database = Database.from_settings(make_settings(data_dir))
    try:
        for index in range(count):
            async with database.transaction() as session:
                await record_event(session, _event(index))
    finally:
        await database.dispose()


async def test_audit_verify_command_passes_then_names_the_tampered_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"BASTION_DATA_DIR": str(data_dir)}
    migrated = run_bastion("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    await _append_in_process(data_dir, 4)

    intact = run_bastion("audit", "verify", cwd=tmp_path, env=env)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.strip() == "audit chain intact: 4 events"

    with sqlite3.connect(data_dir / "bastion.sqlite3") as connection:
        connection.execute(
            "UPDATE audit_events SET details = ? WHERE seq = 2", (json.dumps({"index": 99}),)
        )
    connection.close()
    broken = run_bastion("audit", "verify", cwd=tmp_path, env=env)
    assert broken.returncode == 1
    assert "audit chain broken at event 2:" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_audit_verify_says_so_when_the_database_does_not_answer(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    result = run_bastion(
        "audit", "verify", cwd=tmp_path,
        env={"BASTION_DATABASE_URL": url, "BASTION_DATABASE_TIMEOUT": "2"},
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_verify_wants_a_migrated_database(tmp_path: Path) -> None:
    result = run_bastion("audit", "verify", cwd=tmp_path)
    assert result.returncode == 1
    assert "bastion migrate" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_seeded_head_starts_at_genesis(app: FastAPI) -> None:
    async with _database(app).engine.connect() as connection:
        heads = (await connection.execute(select(AuditChainHead.__table__))).all()
        events = (await connection.execute(select(func.count()).select_from(AuditEvent))).one()
    assert [(head.id, head.last_seq, head.last_hash) for head in heads] == [(1, 0, GENESIS_HASH)]
    assert events == (0,)
