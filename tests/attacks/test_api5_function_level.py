"""API5:2023 Broken Function Level Authorization: who may call which route at all.

The authorization matrix (``matrix.py``) lists every route for five callers (anonymous, a
plain user, another plain user, an auditor, an admin); a route it does not list fails
``test_the_matrix_covers_every_route``. The cells that name one note are API1's
(``test_api1_bola.py``).
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from bastion.route_inventory import route_policies
from tests.attacks.matrix import EXTRA_CELLS, FUNCTION_CELLS, MATRIX, assert_cell, cell_id


def test_the_matrix_covers_every_route(app: FastAPI) -> None:
    routes = {(methods, path) for methods, path, _ in route_policies(app)}
    listed = set(MATRIX) - EXTRA_CELLS
    assert routes - listed == set(), "routes without a matrix entry: decide who may call them"
    assert listed - routes == set(), "matrix entries for routes that no longer exist"


@pytest.mark.parametrize("cell", FUNCTION_CELLS, ids=cell_id)
async def test_each_caller_gets_the_status_the_contract_gives(
    app: FastAPI, client: httpx.AsyncClient, cell: tuple[str, str]
) -> None:
    await assert_cell(app, client, cell)
