"""Turning the bench's figures into targets with PASS/MISS, a text table, a markdown table
and a hand-written SVG chart (no plotting dependency), and writing them into
docs/performance.md between its ``bench:after`` markers.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from bench.wrk import WrkResult

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:after:start -->", "<!-- bench:after:end -->"


@dataclass(frozen=True, slots=True)
class Summary:
    """A scenario's figures over its rounds: medians, except ``max_ms`` (the worst round)
    and ``server_errors`` (the sum), which a target must hold in every round."""

    rounds: int
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_errors: int
    non_2xx_3xx: int


def summarise(results: Sequence[WrkResult]) -> Summary:
    return Summary(
        rounds=len(results),
        rate=statistics.median(r.rate for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        server_errors=sum(r.server_errors for r in results),
        non_2xx_3xx=sum(r.non_2xx_3xx for r in results),
    )


@dataclass(frozen=True, slots=True)
class Target:
    """One line of the verdict: ``figure`` against ``limit``, at least or at most."""

    name: str
    figure: float
    limit: float
    at_least: bool
    unit: str = "x"

    @property
    def passed(self) -> bool:
        return self.figure >= self.limit if self.at_least else self.figure <= self.limit

    @property
    def headroom(self) -> float:
        """figure / limit, oriented so that 1.0 is the target and more is better."""
        if self.at_least:
            return self.figure / self.limit if self.limit else 0.0
        return self.limit / self.figure if self.figure else float("inf")

    def cells(self) -> tuple[str, str, str, str]:
        sign = ">=" if self.at_least else "<="
        limit = f"{sign} {_number(self.limit, self.unit)}"
        return (self.name, _number(self.figure, self.unit), limit,
                "PASS" if self.passed else "MISS")


@dataclass(frozen=True, slots=True)
class Info:
    """An informational figure (a peer's ratio): reported beside the targets, judged by none,
    left out of the chart."""

    name: str
    figure: float
    unit: str = "x"

    def cells(self) -> tuple[str, str, str, str]:
        return (self.name, _number(self.figure, self.unit), "(no target)", "info")


def _number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "":
        return f"{value:,.0f}"
    return f"{value:,.1f} {unit}"


def _columns(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def text_table(summaries: Mapping[str, Summary], targets: Sequence[Target],
               header: str, infos: Sequence[Info] = ()) -> str:
    rows = [("scenario", "req/s", "p50 ms", "p99 ms", "max ms", "5xx", "non-2xx", "rounds")]
    rows += [
        (name, f"{s.rate:,.0f}", f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.max_ms:.1f}",
         str(s.server_errors), str(s.non_2xx_3xx), str(s.rounds))
        for name, s in summaries.items()
    ]
    widths = _columns(rows)
    lines = [header, ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              for row in rows]
    verdicts = [("target", "figure", "limit", "result"), *(t.cells() for t in targets),
                *(i.cells() for i in infos)]
    widths = _columns(verdicts)
    lines += [""] + [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in verdicts
    ]
    return "\n".join(lines) + "\n"


def markdown(summaries: Mapping[str, Summary], targets: Sequence[Target], header: str,
             svg_name: str, infos: Sequence[Info] = ()) -> str:
    lines = [f"_{header}_", "", "| target | figure | limit | result |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(t.cells()) + " |" for t in targets]
    lines += ["| " + " | ".join(i.cells()) + " |" for i in infos]
    lines += ["", "| scenario | req/s | p50 ms | p99 ms | max ms | 5xx |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {name} | {s.rate:,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.max_ms:.1f} | "
        f"{s.server_errors} |"
        for name, s in summaries.items()
    ]
    lines += ["", f"![each target's figure over its limit]({svg_name})", ""]
    return "\n".join(lines)


def svg(targets: Sequence[Target], title: str) -> str:
    """Each target's headroom as a bar on a log-free linear scale capped at 3: the line at
    1.0 is the target; green bars reach it, red ones do not."""
    bar, gap, left, width = 18, 8, 330, 360
    height = 50 + len(targets) * (bar + gap) + 30
    cap = 3.0

    def x_of(value: float) -> float:
        return left + width * min(value, cap) / cap

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        '<text x="10" y="38" fill="#555">figure / limit (1.0 = target, longer is better, '
        'capped at 3)</text>',
    ]
    for index, target in enumerate(targets):
        y = 50 + index * (bar + gap)
        colour = "#2e8b57" if target.passed else "#c0392b"
        parts.append(f'<text x="10" y="{y + 13}">{escape(target.name)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{x_of(target.headroom) - left:.1f}" '
                     f'height="{bar}" fill="{colour}"/>')
        parts.append(f'<text x="{x_of(target.headroom) + 4:.1f}" y="{y + 13}">'
                     f'{escape(_number(target.figure, target.unit))}</text>')
    bottom = 50 + len(targets) * (bar + gap)
    parts.append(f'<line x1="{x_of(1):.1f}" y1="44" x2="{x_of(1):.1f}" y2="{bottom}" '
                 'stroke="#000" stroke-dasharray="4 3"/>')
    for tick in (0, 1, 2, 3):
        parts.append(f'<text x="{x_of(tick) - 4:.1f}" y="{bottom + 16}">{tick}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def update_doc(block: str, doc: Path = DOC) -> bool:
    """Replaces what lies between the doc's ``bench:after`` markers; False when the doc
    or its markers are missing (the figures are then only in bench/out/)."""
    if not doc.exists():
        return False
    text = doc.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        return False
    doc.write_text(pattern.sub(lambda _: f"{START}\n{block}\n{END}", text))
    return True
