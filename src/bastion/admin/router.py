"""/admin: users and the audit log, for operators."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["admin"])
