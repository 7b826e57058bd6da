"""Serialisers: protected results and members to JSON, CSV, Arrow IPC and Parquet.

Input is only ever a :class:`~cube.disclosure.gate.ProtectedResult` (whose cells table cannot
hold an internal column), a :class:`~cube.workspace.Members` table (labels, no values) or a
plain dict built by the routes from the model. Nothing here computes, rounds, drops or caps a
value: every format carries exactly the cells the gate returned, in its order.

- JSON (orjson): the Cubes 1.1 shape from ``ProtectedResult.to_json`` plus ``release``.
  Withheld means are ``null`` with ``<aggregate>_withheld: true``.
- CSV (RFC 4180, UTF-8, CRLF), streamed in batches: attributes, the split flag if any, then
  aggregates; a withheld value is written ``..`` (the ONS convention); ``header`` picks names,
  labels or no header row. The writer is the core's (cube/csvfile.py), shared with the CLI,
  so the same query gives the same bytes from both.
- GeoJSON (``/aggregate`` drilled by a geography level with boundaries): a FeatureCollection,
  one feature per area with code, name, aggregates and withheld flags (cube/geojson.py).
- Arrow IPC stream and Parquet: the cells table as is (withheld values null, flags kept);
  everything else of the JSON response (summary, disclosure report, release…) sits in the
  schema metadata under ``statcube`` as JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cube.csvfile import aggregate_csv, members_csv
from cube.disclosure.gate import ProtectedResult
from cube.engine import Engine
from cube.errors import ArgumentError
from cube.geojson import feature_collection

MEDIA_TYPES: Mapping[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "geojson": "application/geo+json",
    "json_lines": "application/x-json-lines",
}
_ACCEPT: Mapping[str, str] = {
    "application/json": "json", "text/csv": "csv",
    "application/vnd.apache.arrow.stream": "arrow", "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet", "application/geo+json": "geojson",
}


@dataclass(frozen=True)
class Output:
    """A serialised body: bytes, or byte chunks to stream. ``size`` counts its cells/rows."""

    body: bytes | Iterable[bytes]
    media_type: str
    size: int = 0


def negotiate(fmt: str | None, accept: Any, allowed: Sequence[str]) -> str:
    """``format=`` wins; else the best ``Accept`` match; else JSON (never a 406)."""
    if fmt is not None:
        if fmt not in allowed:
            raise ArgumentError(f"format {fmt!r} is not offered here", parameter="format",
                                value=fmt, hint="valid: " + ", ".join(allowed))
        return fmt
    if accept is None:
        return "json"
    offered = [m for m, f in _ACCEPT.items() if f in allowed]
    best = accept.best_match(offered, default="application/json")
    return _ACCEPT.get(best, "json")


def json_bytes(payload: Any, pretty: bool = False) -> bytes:
    opts = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(payload, option=opts | orjson.OPT_APPEND_NEWLINE)


def json_output(payload: Any, size: int = 0, *, pretty: bool) -> Output:
    return Output(json_bytes(payload, pretty), MEDIA_TYPES["json"], size)


# --- aggregate results ------------------------------------------------------------------------

def aggregate_json(result: ProtectedResult, release: str) -> dict[str, Any]:
    return {**result.to_json(), "release": release}


def _metadata(result: ProtectedResult, release: str) -> dict[bytes, bytes]:
    """Everything of the JSON response but the cells (built from an empty copy, so the
    shape is exactly the JSON one)."""
    empty = dataclasses.replace(result, cells=result.cells.slice(0, 0))
    meta = {k: v for k, v in aggregate_json(empty, release).items() if k != "cells"}
    return {b"statcube": orjson.dumps(meta)}


def aggregate_output(result: ProtectedResult, release: str, fmt: str, header: str,
                     pretty: bool, engine: Engine | None = None) -> Output:
    size = result.cells.num_rows
    if fmt == "json":
        return json_output(aggregate_json(result, release), size, pretty=pretty)
    if fmt == "geojson":
        if engine is None:
            raise ArgumentError("GeoJSON is offered by /aggregate only", parameter="format",
                                value=fmt)
        fc = feature_collection(result, engine)
        fc["statcube"]["release"] = release
        return Output(json_bytes(fc, pretty), MEDIA_TYPES["geojson"], size)
    if fmt == "csv":
        return Output(aggregate_csv(result, header), MEDIA_TYPES["csv"], size)
    return binary_output(result.cells, _metadata(result, release), fmt, size)


def binary_output(table: pa.Table, metadata: Mapping[bytes, bytes], fmt: str, size: int
                  ) -> Output:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    if fmt == "arrow":
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, sink, compression="zstd")
    return Output(sink.getvalue().to_pybytes(), MEDIA_TYPES[fmt], size)


# --- members -------------------------------------------------------------------------------

def members_output(payload: Mapping[str, Any], table: pa.Table, labels: Mapping[str, str],
                   fmt: str, header: str, pretty: bool) -> Output:
    """``payload`` is the JSON shape without ``data``; ``table`` the member rows."""
    size = table.num_rows
    if fmt == "json":
        return json_output({**payload, "data": table.to_pylist()}, size, pretty=pretty)
    if fmt == "json_lines":  # Cubes' Slicer: one member per line, nothing else
        return Output(b"".join(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
                               for row in table.to_pylist()), MEDIA_TYPES[fmt], size)
    if fmt == "csv":
        return Output(members_csv(table, labels, header), MEDIA_TYPES["csv"], size)
    return binary_output(table, {b"statcube": orjson.dumps(dict(payload))}, fmt, size)
