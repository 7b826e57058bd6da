"""Serialisers: protected results and members to JSON, CSV, Arrow IPC and Parquet.

Input is only ever a :class:`~cube.disclosure.gate.ProtectedResult` (whose cells table cannot
hold an internal column), a :class:`~cube.workspace.Members` table (labels, no values) or a
plain dict built by the routes from the model. Nothing here computes, rounds, drops or caps a
value: every format carries exactly the cells the gate returned, in its order.

- JSON (orjson): the Cubes 1.1 shape from ``ProtectedResult.to_json`` plus ``release``.
  Withheld means are ``null`` with ``<aggregate>_withheld: true``.
- CSV (RFC 4180, UTF-8, CRLF), streamed in batches: attributes, the split flag if any, then
  aggregates; a withheld value is written ``..`` (the ONS convention); ``header`` picks names,
  labels or no header row. NUL characters are never written (Cubes 1.1 wrote them).
- GeoJSON (``/aggregate`` drilled by a geography level with boundaries): a FeatureCollection,
  one feature per area with code, name, aggregates and withheld flags (cube/geojson.py).
- Arrow IPC stream and Parquet: the cells table as is (withheld values null, flags kept);
  everything else of the JSON response (summary, disclosure report, release…) sits in the
  schema metadata under ``statcube`` as JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cube.disclosure.gate import ProtectedResult
from cube.disclosure.protect import withheld_column
from cube.engine import Engine
from cube.errors import ArgumentError
from cube.geojson import feature_collection
from cube.sql import SPLIT

MEDIA_TYPES: Mapping[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "geojson": "application/geo+json",
}
_ACCEPT: Mapping[str, str] = {
    "application/json": "json", "text/csv": "csv",
    "application/vnd.apache.arrow.stream": "arrow", "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet", "application/geo+json": "geojson",
}
WITHHELD = ".."
CSV_BATCH_ROWS = 2000
SPLIT_LABEL = "Within split"


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
        q = result.query
        columns = [a.ref for a in q.cell_attributes] + ([SPLIT] if q.split else []) + \
            [a.name for a in q.aggregates]
        labels = [a.label for a in q.cell_attributes] + ([SPLIT_LABEL] if q.split else []) + \
            [a.label for a in q.aggregates]
        flags = {a.name: withheld_column(a.name) for a in q.aggregates
                 if withheld_column(a.name) in result.cells.column_names}
        values = {a.name for a in q.aggregates}
        return Output(csv_chunks(result.cells, columns, labels, header, values, flags),
                      MEDIA_TYPES["csv"], size)
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


# --- CSV ------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value).replace("\x00", "")


def csv_chunks(table: pa.Table, columns: Sequence[str], labels: Sequence[str], header: str,
               values: Iterable[str] = (), flags: Mapping[str, str] | None = None
               ) -> Iterator[bytes]:
    """Stream ``table`` as CSV, one chunk per batch. A cell of a ``values`` column that is
    null or flagged in ``flags`` (column → its withheld-flag column) is written ``..``."""
    flags = flags or {}
    value_cols = set(values)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if header != "none":
        writer.writerow([_text(h) for h in (columns if header == "names" else labels)])
    for batch in table.to_batches(max_chunksize=CSV_BATCH_ROWS):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            row = []
            for c in columns:
                v = data[c][i]
                if c in value_cols and (v is None or (c in flags and data[flags[c]][i])):
                    row.append(WITHHELD)
                else:
                    row.append(_text(v))
            writer.writerow(row)
        yield buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
    rest = buf.getvalue()
    if rest:
        yield rest.encode("utf-8")


# --- members -------------------------------------------------------------------------------

def members_output(payload: Mapping[str, Any], table: pa.Table, labels: Mapping[str, str],
                   fmt: str, header: str, pretty: bool) -> Output:
    """``payload`` is the JSON shape without ``data``; ``table`` the member rows."""
    size = table.num_rows
    if fmt == "json":
        return json_output({**payload, "data": table.to_pylist()}, size, pretty=pretty)
    if fmt == "csv":
        cols = table.column_names
        return Output(csv_chunks(table, cols, [labels.get(c, c) for c in cols], header),
                      MEDIA_TYPES["csv"], size)
    return binary_output(table, {b"statcube": orjson.dumps(dict(payload))}, fmt, size)
