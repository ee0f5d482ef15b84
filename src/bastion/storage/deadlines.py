"""One deadline for all the storage work of a request, however many units of work it takes.

``BASTION_DATABASE_TIMEOUT`` promises a client an answer (a 503 at worst) within that many
seconds of the request's first storage step. Timeouts per step do not keep that promise: a
login is two units of work, and one checkout alone may be a pre-ping, a reconnect and a
close, each with its own timeout. So a request opens a budget (``one_deadline()``, done for
every route by ``bastion.routing.PolicyRoute``); the first unit of work starts its clock, and
every later one ends at the same moment. Work outside a request (start-up, background
retries, the CLI) has no budget: each unit of work gets the whole timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class _Budget:
    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline: float | None = None


_budget: ContextVar[_Budget | None] = ContextVar("bastion_storage_budget", default=None)


@contextmanager
def one_deadline() -> Iterator[None]:
    """Every unit of work inside shares one deadline, set by the first of them."""
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def deadline_for(now: float, timeout: float) -> float:
    """When the unit of work starting at ``now`` (event-loop time) must be done: the
    enclosing budget's deadline, started now if this is its first unit of work; without a
    budget, ``timeout`` from now."""
    budget = _budget.get()
    if budget is None:
        return now + timeout
    if budget.deadline is None:
        budget.deadline = now + timeout
    return budget.deadline
