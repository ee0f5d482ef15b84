"""The base of every request body: one definition, so every package refuses the same way."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bastion.security.text import TEXT_PATTERN, TEXT_REFUSED_MESSAGE, holds_refused_character

# The error type of a body with fields the schema does not have, and its whole message: the
# names are the client's choice, so they are not repeated (``bastion.errors.field_errors``).
UNKNOWN_FIELDS_ERROR = "unknown_fields"
UNKNOWN_FIELDS_MESSAGE = "Unknown fields are not allowed."


def _holds_refused_text(value: Any) -> bool:
    if isinstance(value, str):
        return holds_refused_character(value)
    if isinstance(value, list):
        return any(_holds_refused_text(item) for item in value)
    return False


def _state_text_pattern(schema: dict[str, Any]) -> None:
    """Every string of the body without a stricter rule of its own says it refuses control
    characters, as every string of a ``StrictModel`` does."""
    if schema.get("type") == "string" and not {"pattern", "enum", "const"} & schema.keys():
        schema["pattern"] = TEXT_PATTERN
    for member in schema.get("anyOf", ()):
        _state_text_pattern(member)
    if isinstance(schema.get("items"), dict):
        _state_text_pattern(schema["items"])


def _document_model(schema: dict[str, Any], model: type[BaseModel]) -> None:
    partial = issubclass(model, PatchModel)
    for name, property_schema in schema.get("properties", {}).items():
        _state_text_pattern(property_schema)
        if partial and name in model.model_fields:
            _not_nullable(property_schema)
    if issubclass(model, PatchModel) and model._at_least_one_field:
        schema["minProperties"] = 1


def _not_nullable(schema: dict[str, Any]) -> None:
    members = [member for member in schema.get("anyOf", ()) if member.get("type") != "null"]
    if "anyOf" in schema and len(members) == 1:
        del schema["anyOf"]
        schema.update(members[0])
    schema.pop("default", None)


class StrictModel(BaseModel):
    """Unknown fields are a 422, never silently dropped: a body that names ``owner_id`` or
    ``roles`` where the schema does not is refused rather than half-read (no mass
    assignment). Nothing is trimmed: what is stored is what was sent, or it is refused.

    No string anywhere in the body may hold a control character but tab, line feed and
    carriage return (``bastion.security.text``), whatever the field, so a field added
    later is guarded too; the document states it for every string field."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=False, json_schema_extra=_document_model
    )

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        """One error for any number of unknown fields, before any field is validated.
        ``extra="forbid"`` alone reports each (30,000 keys in a 400 KB body were 30,000
        errors, and 0.3 to 0.6 s of CPU to copy and drop); it stays for nested models."""
        if isinstance(data, dict) and not data.keys() <= cls.model_fields.keys():
            raise PydanticCustomError(UNKNOWN_FIELDS_ERROR, UNKNOWN_FIELDS_MESSAGE)
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        if _holds_refused_text(value):
            raise ValueError(TEXT_REFUSED_MESSAGE)
        return value


class PatchModel(StrictModel):
    """A partial update: a field left out is left as it is, ``null`` is refused rather
    than read as "absent" (or as "clear it"). With ``_at_least_one_field``, a body that
    asks for nothing is refused too. The document says the same: no field is nullable (and
    ``minProperties``)."""

    _at_least_one_field: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls.model_fields:
                if name in data and data[name] is None:
                    raise ValueError(f"{name} must not be null; leave it out to keep it.")
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> PatchModel:
        if self._at_least_one_field and not self.model_fields_set:
            raise ValueError(f"Give at least one of: {', '.join(type(self).model_fields)}.")
        return self
