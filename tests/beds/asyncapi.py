"""The vendor AsyncAPI contract (2025 snapshot in tests/data) as JSON Schemas for conformance.

`validate_server_message(obj)` / `validate_client_message(obj)` pick the schema by `type` (or the
`user_audio_chunk` key) and raise `jsonschema.ValidationError` when the message breaks it.
Types the snapshot does not list cannot be checked: ask `covered_by_contract(type_name)` first;
validating such a type raises `NotInContract` (a LookupError).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONTRACT_PATH = Path(__file__).parent.parent / "data" / "elevenlabs-convai-asyncapi.yml"
CHANNEL = "/v1/convai/conversation"
AUDIO_CHUNK = "user_audio_chunk"  # the one client message without a `type`, keyed by this field
_LITERAL = re.compile(r'^literal<"([^"]*)">$')
# JSON Schema keywords the contract uses that mean the same in JSON Schema; the rest is prose.
_KEYWORDS = ("type", "required", "minimum", "maximum", "enum", "const")

JSON = dict[str, Any]


class NotInContract(LookupError):
    """The message type is not described by the contract snapshot, so it cannot be validated."""


def to_json_schema(node: Any) -> Any:
    """One AsyncAPI schema object as JSON Schema: `x-fern-type: literal<"x">` becomes const."""
    if not isinstance(node, dict):
        return node
    out: JSON = {}
    fern = node.get("x-fern-type")
    if isinstance(fern, str) and (match := _LITERAL.match(fern)):
        out["const"] = match.group(1)
    for key in _KEYWORDS:
        if key in node:
            out[key] = node[key]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if "additionalProperties" in node:
        extra = node["additionalProperties"]
        out["additionalProperties"] = extra if isinstance(extra, bool) else to_json_schema(extra)
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            out[key] = [to_json_schema(item) for item in node[key]]
    return out


@functools.cache
def _contract() -> JSON:
    data = yaml.safe_load(CONTRACT_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@functools.cache
def schemas() -> dict[str, JSON]:
    """Every `components/schemas/X` of the contract, as JSON Schema, by name."""
    raw = _contract()["components"]["schemas"]
    return {name: to_json_schema(schema) for name, schema in raw.items()}


def _type_literal(schema: JSON) -> str | None:
    const = schema.get("properties", {}).get("type", {}).get("const")
    return const if isinstance(const, str) else None


@functools.cache
def _by_type(direction: str) -> dict[str, JSON]:
    """Schemas of one direction (`publish` = client, `subscribe` = server) keyed by wire type."""
    contract = _contract()
    refs = contract["channels"][CHANNEL][direction]["message"]["oneOf"]
    messages = contract["components"]["messages"]
    out: dict[str, JSON] = {}
    for ref in refs:
        message = messages[ref["$ref"].rsplit("/", 1)[1]]
        name = message["payload"]["$ref"].rsplit("/", 1)[1]
        schema = schemas()[name]
        out[_type_literal(schema) or AUDIO_CHUNK] = schema
    return out


def server_types() -> frozenset[str]:
    """Server -> client types the contract describes."""
    return frozenset(_by_type("subscribe"))


def client_types() -> frozenset[str]:
    """Client -> server types the contract describes (`user_audio_chunk` for the audio message)."""
    return frozenset(_by_type("publish"))


def covered_by_contract(type_name: str) -> bool:
    """Whether the 2025 contract describes this message type, in either direction."""
    return type_name in server_types() or type_name in client_types()


def contract_literals() -> set[str]:
    """Every `x-fern-type: literal<...>` type name in the contract's schemas."""
    return {t for s in schemas().values() if (t := _type_literal(s)) is not None}


def _validate(obj: JSON, direction: str) -> None:
    if not isinstance(obj, dict):
        raise jsonschema.ValidationError(f"a message is a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind is None and AUDIO_CHUNK in obj:
        kind = AUDIO_CHUNK
    table = _by_type(direction)
    if not isinstance(kind, str) or kind not in table:
        side = "server" if direction == "subscribe" else "client"
        raise NotInContract(f"{side} message type {kind!r} is not in the 2025 contract")
    jsonschema.Draft202012Validator(table[kind]).validate(obj)


def validate_server_message(obj: JSON) -> None:
    """Validate a server -> client message against its contract schema."""
    _validate(obj, "subscribe")


def validate_client_message(obj: JSON) -> None:
    """Validate a client -> server message against its contract schema."""
    _validate(obj, "publish")
