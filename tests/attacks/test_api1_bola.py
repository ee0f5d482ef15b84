"""API1:2023 Broken Object Level Authorization: another user's note id is worth nothing.

The object-level cells of the authorization matrix (``matrix.py``): for every route that
names a note, the owner may act, a plain user who is not the owner gets the 404 a missing
note gets, and an admin (``notes:read_all``) may read but never change, delete or share it.
The same attack in depth (malformed ids, invalid bodies, sharees, deleted notes, identical
answers byte for byte) is in ``tests/notes/test_idor.py``; search and listings in
``tests/notes/test_notes.py``; the live server in ``tests/e2e/test_authorization_flow.py``.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.attacks.matrix import OBJECT_CELLS, assert_cell, cell_id


@pytest.mark.parametrize("cell", OBJECT_CELLS, ids=cell_id)
async def test_each_caller_gets_the_status_the_contract_gives(
    app: FastAPI, client: httpx.AsyncClient, cell: tuple[str, str]
) -> None:
    await assert_cell(app, client, cell)
