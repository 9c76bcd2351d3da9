"""Reading a batch: the body, bounded, then its records, typed.

A batch is a JSON array of records (``Content-Type: application/json``, also assumed
without a Content-Type) or NDJSON, one record per line (``application/x-ndjson``; blank
lines are skipped). Records are decoded with msgspec into their Struct: an unknown field,
a missing one or a wrong type is a 400 whose ``detail`` names the record's index (from 0,
in the batch) and the field, also given apart as ``index`` and ``field``. The first bad
record refuses the whole batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import msgspec
from litestar import Request

from multidb.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from multidb.ingest.limits import IngestLimits

T = TypeVar("T")

JSON = "application/json"
NDJSON = "application/x-ndjson"
# Also read as NDJSON: the names other producers use for the same format.
NDJSON_ALIASES = frozenset({NDJSON, "application/ndjson", "application/jsonl"})

# msgspec's messages end with where the value was (" - at `$[3].error.type`"), and may name
# the field themselves ("Object contains unknown field `foo`").
_AT = re.compile(r" - at `\$(?:\[(?P<index>\d+)\])?\.?(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"field `(?P<field>[^`]+)`")
# What a field's message can add (the values it may take).
HINTS = {"level": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL", "type": "'event' or 'activity'"}


def too_large(limits: IngestLimits) -> PayloadTooLargeError:
    msg = (
        f"the batch is larger than {limits.max_bytes} bytes (MULTI_DB_INGEST_MAX_BYTES): "
        "send it in smaller batches"
    )
    return PayloadTooLargeError(msg)


async def read_body(request: Request[Any, Any, Any], limits: IngestLimits) -> bytes:
    """The request's body, refused with a 413 as soon as it is longer than
    ``limits.max_bytes`` (by its Content-Length, or while it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large(limits)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def body_format(content_type: str | None) -> str:
    """``JSON`` or ``NDJSON`` for a request's Content-Type; 415 for anything else."""
    kind = (content_type or JSON).partition(";")[0].strip().lower()
    if kind == JSON:
        return JSON
    if kind in NDJSON_ALIASES:
        return NDJSON
    msg = (
        f"a batch is sent as {JSON} (a JSON array of records) or {NDJSON} (one record "
        f"per line), not {kind or 'an empty Content-Type'}"
    )
    raise UnsupportedMediaTypeError(msg)


def _refused(exc: msgspec.ValidationError, index: int | None) -> BadRequestError:
    """The 400 for msgspec's complaint about a record (``index``, when the path lacks it)."""
    message = str(exc)
    path = ""
    if at := _AT.search(message):
        message = message[: at.start()]
        path = at["path"]
        if at["index"] is not None:
            index = int(at["index"])
    if named := _NAMED_FIELD.search(message):
        path = f"{path}.{named['field']}" if path else named["field"]
    if index is None:  # the body itself, not a record
        msg = f"the body must be a JSON array of records, or NDJSON ({NDJSON}): {message}"
        return BadRequestError(msg)
    field = path or None
    hint = HINTS.get(path.rpartition(".")[2]) if message.startswith("Invalid") else None
    where = f"record {index}" + (f", field '{field}'" if field else "")
    detail = f"{where}: {message}" + (f" ({hint})" if hint else "")
    return BadRequestError(detail, index=index, field=field)


def _malformed(exc: Exception, where: str) -> BadRequestError:
    if isinstance(exc, RecursionError):
        return BadRequestError(f"{where} is nested too deeply")
    return BadRequestError(f"{where} is not valid JSON: {exc}")


def _too_many(count: int, limits: IngestLimits, *, more: bool = False) -> PayloadTooLargeError:
    held = f"at least {count}" if more else str(count)
    msg = (
        f"the batch holds {held} records, more than {limits.max_records} "
        "(MULTI_DB_INGEST_MAX_RECORDS): send it in smaller batches"
    )
    return PayloadTooLargeError(msg)


def _decode_array(
    body: bytes, decoder: msgspec.json.Decoder[list[T]], limits: IngestLimits
) -> list[T]:
    try:
        records = decoder.decode(body)
    except msgspec.ValidationError as exc:
        refused = _refused(exc, None)
        index = refused.extra.get("index")
        if isinstance(index, int) and index >= limits.max_records:
            # Past the limit: the batch is too long, whatever its later records hold.
            raise _too_many(index + 1, limits) from None
        raise refused from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _malformed(exc, "the body") from None
    if len(records) > limits.max_records:
        raise _too_many(len(records), limits)
    return records


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of each line that is not blank, one at a time: a body of
    millions of short lines never becomes a list of millions."""
    start, number = 0, 0
    while start < len(body):
        end = body.find(b"\n", start)
        end = len(body) if end == -1 else end
        number += 1
        line = body[start:end]
        start = end + 1
        if line.strip():
            yield number, line


def _decode_lines(body: bytes, decoder: msgspec.json.Decoder[T], limits: IngestLimits) -> list[T]:
    lines = []
    for found in _lines(body):
        lines.append(found)
        if len(lines) > limits.max_records:
            raise _too_many(len(lines), limits, more=True)
    records: list[T] = []
    for index, (number, line) in enumerate(lines):
        try:
            records.append(decoder.decode(line))
        except msgspec.ValidationError as exc:
            raise _refused(exc, index) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _malformed(exc, f"record {index} (line {number})") from None
    return records


class BatchDecoder(Generic[T]):
    """Decodes batches of ``record_type`` (a Struct, or a tagged union of Structs)."""

    def __init__(self, record_type: Any) -> None:
        self.array: msgspec.json.Decoder[list[T]] = msgspec.json.Decoder(list[record_type])
        self.line: msgspec.json.Decoder[T] = msgspec.json.Decoder(record_type)


def decode_batch(
    body: bytes, content_type: str | None, decoder: BatchDecoder[T], limits: IngestLimits
) -> list[T]:
    """The records of a batch, or the 400/413/415 that says what is wrong with it."""
    if body_format(content_type) == NDJSON:
        return _decode_lines(body, decoder.line, limits)
    if not body.strip():
        raise BadRequestError("the body is empty: send a JSON array of records")
    return _decode_array(body, decoder.array, limits)
