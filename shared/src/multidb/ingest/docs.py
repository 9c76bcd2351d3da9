"""The OpenAPI operation of an ingestion route, whose handler reads the body itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema

from multidb.ingest.body import JSON

_REF = "#/$defs/"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` to ``defs`` replaced by the definition itself."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            return _inline(defs[ref.removeprefix(_REF)], defs)
        # A discriminator's mapping names the $refs that are inlined away.
        return {key: _inline(value, defs) for key, value in node.items() if key != "discriminator"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def batch_schema(record_type: Any) -> dict[str, Any]:
    """msgspec's own JSON schema of a batch of ``record_type`` (the one the decoder
    enforces), self-contained."""
    schema = msgspec.json.schema(list[record_type])
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    return inlined


def batch_operation(record_type: Any) -> type[Operation]:
    """The operation class of a route that takes a batch of ``record_type``: documents the
    JSON array it accepts (NDJSON, the same records one per line, is said in the route's
    description: OpenAPI has no schema for it)."""
    schema = cast(Schema, batch_schema(record_type))

    @dataclass
    class BatchBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                required=True, content={JSON: OpenAPIMediaType(schema=schema)}
            )

    return BatchBody
