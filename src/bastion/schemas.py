"""The base of every request body: one definition, so every package refuses the same way."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are a 422, never silently dropped: a body that names ``owner_id`` or
    ``roles`` where the schema does not is refused rather than half-read (no mass
    assignment). Nothing is trimmed: what is stored is what was sent, or it is refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
