"""What ``bastion serve``'s app factory adds to ``create_app``."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from bastion.app import app_from_environment, create_app
from bastion.services import services_of
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import make_settings


async def test_a_served_worker_freezes_what_it_built_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full collection need not walk the start-up objects again (``gc.freeze``)."""
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path))
    app = app_from_environment()
    await upgrade_to_head(services_of(app).database.engine)
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_an_app_built_by_hand_leaves_the_collector_alone(tmp_path: Path) -> None:
    """A library user's (or a test's) app may be dropped: its objects must stay collectable."""
    app = create_app(make_settings(tmp_path))
    await upgrade_to_head(services_of(app).database.engine)
    gc.unfreeze()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
