"""What the bench measures: the servers, the data they serve and the wrk loads, one
``Scenario`` per measured line, each tagged with the target (docs/performance.md) it feeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import servers
from bench.wrk import LUA_DIR, Load

CONNECTIONS = 32
HAMMER_CONNECTIONS = 16
VICTIM_CONNECTIONS = 4
HAMMER_NOTES = 100
# The largest note body the API takes (bastion.security.sanitize.MAX_HTML_BYTES is 65,536),
# in words that the search never finds, so every search scans every byte.
LARGE_BODY = "<p>" + "lorem ipsum dolor sit amet " * 2400 + "</p>"
SMALL_BODY = "<p>" + "a short note of a few words " * 20 + "</p>"
PEER = "fastapi-users"  # the peer's server (bench/peer_fastapi_users.py, in .venv-peers)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    server: str
    load: Load
    # A load run beside the measured one (target 4's hammering user), not measured itself.
    beside: Load | None = None


@dataclass
class Fixture:
    """Accounts and notes, made through the API before the first round."""

    values: dict[str, str] = field(default_factory=dict)

    def bearer(self, who: str) -> tuple[str, ...]:
        return (f"Authorization: Bearer {self.values[who + '_token']}",)


def prepare(ports: dict[str, int], with_postgres: bool) -> Fixture:
    fixture = Fixture()
    port = ports["bastion"]
    for who in ("reader", "mixer", "hammer", "victim"):
        user_id, token = servers.account(port, f"bench_{who}")
        fixture.values[f"{who}_id"], fixture.values[f"{who}_token"] = user_id, token
    fixture.values["reader_cookie"] = servers.session_cookie(port, "bench_reader")
    fixture.values["reader_note"] = servers.create_notes(
        port, fixture.values["reader_token"], 1, SMALL_BODY)[0]
    fixture.values["mixer_notes"] = ",".join(
        servers.create_notes(port, fixture.values["mixer_token"], 20, SMALL_BODY))
    servers.create_notes(port, fixture.values["hammer_token"], HAMMER_NOTES, LARGE_BODY)
    servers.create_notes(port, fixture.values["victim_token"], 10, SMALL_BODY)
    if PEER in ports:
        fixture.values["peer_token"] = servers.peer_token(ports[PEER])
    if with_postgres:
        _, token = servers.account(ports["bastion-pg"], "bench_mixer")
        fixture.values["pg_mixer_token"] = token
        fixture.values["pg_mixer_notes"] = ",".join(
            servers.create_notes(ports["bastion-pg"], token, 20, SMALL_BODY))
    return fixture


def _mixed(token: str, notes: str) -> Load:
    return Load(script=LUA_DIR / "mixed.lua", connections=CONNECTIONS,
                env=(("BENCH_TOKEN", token), ("BENCH_NOTES", notes)))


def scenarios(fixture: Fixture, *, with_postgres: bool) -> list[Scenario]:
    v = fixture.values
    reader = fixture.bearer("reader")
    found = [
        Scenario("bare FastAPI, constant", "bare", Load("/bench")),
        Scenario("bastion GET /health/live", "bastion", Load("/health/live")),
        Scenario("bare FastAPI, ORM get(User)", "orm", Load(f"/bench/users/{v['reader_id']}")),
        Scenario("bastion GET /auth/me", "bastion", Load("/auth/me", reader)),
        # The same read by a browser: the session cookie instead of the token.
        Scenario("bastion GET /auth/me, cookie", "bastion",
                 Load("/auth/me", (f"Cookie: {v['reader_cookie']}",))),
        Scenario("bare FastAPI, ORM get(Note)", "orm", Load(f"/bench/notes/{v['reader_note']}")),
        Scenario("bastion GET /notes/{id}", "bastion",
                 Load(f"/notes/{v['reader_note']}", reader)),
    ]
    if "peer_token" in v:
        found.append(Scenario("fastapi-users GET /me", PEER, Load("/me", fixture.bearer("peer"))))
    found.append(Scenario("mixed 90/10, SQLite", "bastion",
                          _mixed(v["mixer_token"], v["mixer_notes"])))
    if with_postgres:
        found.append(Scenario("mixed 90/10, PostgreSQL", "bastion-pg",
                              _mixed(v["pg_mixer_token"], v["pg_mixer_notes"])))
    victim = Load("/notes?limit=1", fixture.bearer("victim"), connections=VICTIM_CONNECTIONS)
    hammer = Load("/notes?q=zebra&limit=100", fixture.bearer("hammer"),
                  connections=HAMMER_CONNECTIONS)
    found += [
        Scenario("other user GET /notes?limit=1", "bastion", victim),
        Scenario("same, one user hammering search", "bastion", victim, beside=hammer),
    ]
    return found


def bastion_servers(data_dir: Path, pg_url: str | None,
                    with_peer: bool = False) -> list[servers.Server]:
    """bastion (and bastion on PostgreSQL), the bare baselines and, when ``with_peer``, the
    fastapi-users peer from .venv-peers."""
    env = servers.bastion_env(data_dir)
    found = [
        servers.Server("bare", "bench.apps:bare", env),
        servers.Server("orm", "bench.apps:orm", env),
        servers.Server("bastion", "bastion.app:app_from_environment", env),
    ]
    if pg_url:
        pg_dir = data_dir / "pg"
        pg_dir.mkdir()
        found.append(servers.Server("bastion-pg", "bastion.app:app_from_environment",
                                    servers.bastion_env(pg_dir, pg_url)))
    if with_peer:
        found.append(servers.Server(PEER, f"{servers.PEER_MODULE}:app",
                                    servers.peer_env(data_dir),
                                    python=str(servers.PEERS_PYTHON),
                                    module=servers.PEER_MODULE))
    return found
