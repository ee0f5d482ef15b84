"""``make bench``: every target of docs/performance.md measured side by side in one run.

All servers start at once, each one uvicorn worker pinned to core 0 (``taskset``); wrk runs
pinned to core 1, and so does PostgreSQL. Rounds interleave the scenarios (A B C … A B C …)
so that a neighbour's burst on this shared machine hits every scenario alike, and every
figure is the median over the rounds. Then target 5 runs in process. Prints the table,
writes bench/out/ (table.txt, table.md, bench.svg, results.json) and, unless ``--no-doc``,
the "after" block of docs/performance.md and docs/performance-after.svg.
The fastapi-users peer (bench/peer_fastapi_users.py) runs from .venv-peers in the same
rounds, reported as information, not a target; it is skipped, saying why, when that venv
is missing or broken.
Run: ``.venv/bin/python -m bench.run`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import report, scenarios, servers, wrk
from bench.report import Info, Summary, Target

OUT = Path(__file__).resolve().parent / "out"
DOC_SVG = report.ROOT / "docs" / "performance-after.svg"


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk time a round")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--memory-count", type=int, default=100_000,
                        help="distinct clients and tokens for target 5 (0: skip)")
    parser.add_argument("--no-burst", action="store_true",
                        help="leave out the burst of large bodies (bench/bursts.py)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out the fastapi-users peer (.venv-peers)")
    parser.add_argument("--no-doc", action="store_true",
                        help="do not write docs/performance.md's after block")
    return parser.parse_args()


@contextlib.contextmanager
def _maybe_postgres(wanted: bool) -> Iterator[str | None]:
    if not wanted:
        yield None
        return
    with servers.postgres() as url:
        yield url


def _measure(found: list[scenarios.Scenario], ports: dict[str, int], rounds: int,
             seconds: float) -> dict[str, list[wrk.WrkResult]]:
    results: dict[str, list[wrk.WrkResult]] = {s.name: [] for s in found}
    for scenario in found:  # warm-up, and a check that the load gets the answers it should
        warm = wrk.run(ports[scenario.server], scenario.load, core=servers.LOAD_CORE, seconds=1)
        if warm.non_2xx_3xx:
            raise RuntimeError(f"{scenario.name}: {warm.non_2xx_3xx} of {warm.requests} "
                               "answers were not 2xx/3xx; the scenario measures an error")
    for number in range(rounds):
        for scenario in found:
            port = ports[scenario.server]
            beside = None
            if scenario.beside is not None:
                beside = wrk.start(port, scenario.beside, core=servers.LOAD_CORE,
                                   seconds=seconds + 2)
                time.sleep(1)
            try:
                result = wrk.run(port, scenario.load, core=servers.LOAD_CORE, seconds=seconds)
            finally:
                if beside is not None:
                    wrk.finish(beside)
            results[scenario.name].append(result)
            print(f"round {number + 1}/{rounds}  {scenario.name:<38} {result.rate:8.0f} req/s"
                  f"  p99 {result.p99_ms:7.2f} ms", file=sys.stderr, flush=True)
    return results


def _memory(count: int) -> dict[str, float]:
    command = ["taskset", "-c", str(servers.SERVER_CORE), sys.executable, "-m",
               "bench.memory", str(count)]
    output = subprocess.run(command, cwd=report.ROOT, check=True, capture_output=True,
                            text=True).stdout
    line = next(line for line in reversed(output.splitlines()) if '"growth_mb"' in line)
    figures: dict[str, float] = json.loads(line)
    return figures


def _burst() -> dict[str, float]:
    output = subprocess.run([sys.executable, "-m", "bench.bursts"], cwd=report.ROOT, check=True,
                            capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


def _targets(s: dict[str, Summary], memory: dict[str, float] | None,
             burst: dict[str, float] | None = None) -> list[Target]:
    def ratio(a: str, b: str) -> float:
        return s[a].rate / s[b].rate

    found = [
        Target("1. /health/live vs bare constant", ratio("bastion GET /health/live",
               "bare FastAPI, constant"), 0.85, True),
        Target("2. /auth/me vs bare ORM get(User)", ratio("bastion GET /auth/me",
               "bare FastAPI, ORM get(User)"), 1.5, True),
        Target("2. /auth/me vs bare constant", ratio("bastion GET /auth/me",
               "bare FastAPI, constant"), 0.30, True),
        Target("2. /auth/me by cookie vs bare ORM get(User)", ratio(
               "bastion GET /auth/me, cookie", "bare FastAPI, ORM get(User)"), 1.5, True),
        Target("2. /notes/{id} vs bare ORM get(Note)", ratio("bastion GET /notes/{id}",
               "bare FastAPI, ORM get(Note)"), 1.5, True),
    ]
    for backend in ("SQLite", "PostgreSQL"):
        mixed = s.get(f"mixed 90/10, {backend}")
        if mixed is None:
            continue
        found += [
            Target(f"3. {backend}: 5xx answers", mixed.server_errors, 0, False, ""),
            Target(f"3. {backend}: p99 / p50", mixed.p99_ms / mixed.p50_ms, 3.0, False),
            Target(f"3. {backend}: slowest request", mixed.max_ms, 250.0, False, "ms"),
        ]
    found.append(Target("4. other user's p99, hammered / alone",
                        s["same, one user hammering search"].p99_ms
                        / s["other user GET /notes?limit=1"].p99_ms, 2.0, False))
    if memory is not None:
        found.append(Target("5. RSS growth, 100k clients + tokens", memory["growth_mb"],
                            100.0, False, "MB"))
    if burst is not None:  # issue 11's per-route body limits, measured here
        found += [
            Target("burst of 100 note bodies: RSS peak", burst["peak_growth_mb"], 100.0, False,
                   "MB"),
            Target("burst of 100 note bodies: RSS 2 s after", burst["after_growth_mb"], 50.0,
                   False, "MB"),
        ]
    return found


def _infos(s: dict[str, Summary]) -> list[Info]:
    """The peer's figures, when it ran: ratios in the same run, judged by no target."""
    peer = s.get("fastapi-users GET /me")
    if peer is None:
        return []
    return [
        Info("peer: fastapi-users /me vs bare constant",
             peer.rate / s["bare FastAPI, constant"].rate),
        Info("peer: bastion /auth/me vs fastapi-users /me",
             s["bastion GET /auth/me"].rate / peer.rate),
    ]


def _with_peer(wanted: bool) -> bool:
    if not wanted:
        return False
    reason = servers.peer_unavailable()
    if reason is not None:
        print(f"fastapi-users peer skipped: {reason}", file=sys.stderr, flush=True)
    return reason is None


def _revision() -> str:
    """The commit measured, marked when src/ differs from it (read before the servers
    start, since the tree may change while the bench runs)."""
    git = ["git", "-C", str(report.ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True,
                           text=True).stdout.strip()
    return f"{commit} + uncommitted src changes" if dirty else commit


def main() -> None:
    options = _options()
    commit = _revision()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: run `make bench` (scripts/bench-deps.sh installs it)")
    with_peer = _with_peer(not options.no_peers)
    data_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    try:
        with _maybe_postgres(not options.no_postgres) as pg_url:
            found_servers = scenarios.bastion_servers(data_dir, pg_url, with_peer)
            for server in found_servers:
                if server.name.startswith("bastion"):
                    servers.migrate(server.env)
            with servers.running(found_servers):
                ports = {server.name: server.port for server in found_servers}
                fixture = scenarios.prepare(ports, pg_url is not None)
                found = scenarios.scenarios(fixture, with_postgres=pg_url is not None)
                results = _measure(found, ports, options.rounds, options.seconds)
        memory = _memory(options.memory_count) if options.memory_count else None
        burst = None if options.no_burst else _burst()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    summaries = {name: report.summarise(runs) for name, runs in results.items()}
    targets = _targets(summaries, memory, burst)
    infos = _infos(summaries)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"{stamp}, commit {commit}, Python {platform.python_version()}, "
              f"{options.rounds} rounds x {options.seconds:g} s, server on core "
              f"{servers.SERVER_CORE}, wrk on core {servers.LOAD_CORE}")
    table = report.text_table(summaries, targets, header, infos)
    if memory is not None:
        table += (f"\nmemory: RSS {memory['before_mb']:.0f} MB -> {memory['after_mb']:.0f} MB "
                  f"after {int(memory['count']):,} distinct clients and tokens\n")
    print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "table.txt").write_text(table)
    picture = report.svg(targets, f"bastion bench, {stamp}")
    (OUT / "bench.svg").write_text(picture)
    block = report.markdown(summaries, targets, header, DOC_SVG.name, infos)
    (OUT / "table.md").write_text(block)
    (OUT / "results.json").write_text(json.dumps(
        {"header": header, "memory": memory, "burst": burst,
         "runs": {k: [dataclasses.asdict(r) for r in v] for k, v in results.items()},
         "targets": [dataclasses.asdict(t) | {"passed": t.passed} for t in targets],
         "peers": [dataclasses.asdict(i) for i in infos]},
        indent=1))
    if not options.no_doc and report.update_doc(block):
        DOC_SVG.write_text(picture)
        print(f"wrote {report.DOC.relative_to(report.ROOT)} (after block) and "
              f"{DOC_SVG.relative_to(report.ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
