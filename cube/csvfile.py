"""CSV of protected results and member lists: one writer for the HTTP API and the CLI.

Why here and not in the server: a cell must read the same whichever door it leaves by. When
the CLI wrote its own CSV (an empty field plus a ``…_withheld`` flag column, LF line ends)
and the server another (``..``, CRLF), the same cell looked different in two files. Both now
stream these chunks.

The format: RFC 4180, UTF-8, CRLF line ends; columns are the drilled attributes, the split
flag if the query has a split, then the aggregates; a withheld (or null) aggregate is
written ``..`` (the ONS convention); ``header`` is ``names`` (attribute references),
``labels`` (the model's labels) or ``none``. NUL characters are never written (Cubes 1.1
wrote them). Input is only a :class:`~cube.disclosure.gate.ProtectedResult` (which cannot
hold an internal column) or a members table (keys and labels, no values): nothing here
computes, rounds, drops or caps a value.

Pure functions over tables: no I/O, no HTTP, no CLI.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from cube.disclosure.gate import ProtectedResult
from cube.disclosure.protect import withheld_column
from cube.model import Dimension
from cube.sql import SPLIT

WITHHELD = ".."
HEADERS = ("names", "labels", "none")
BATCH_ROWS = 2000
SPLIT_LABEL = "Within split"


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
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
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


def aggregate_csv(result: ProtectedResult, header: str = "names") -> Iterator[bytes]:
    """The cells of a protected result as CSV chunks (the withheld flags become ``..``)."""
    q = result.query
    columns = [a.ref for a in q.cell_attributes] + ([SPLIT] if q.split else []) + \
        [a.name for a in q.aggregates]
    labels = [a.label for a in q.cell_attributes] + ([SPLIT_LABEL] if q.split else []) + \
        [a.label for a in q.aggregates]
    flags = {a.name: withheld_column(a.name) for a in q.aggregates
             if withheld_column(a.name) in result.cells.column_names}
    return csv_chunks(result.cells, columns, labels, header, {a.name for a in q.aggregates},
                      flags)


def member_labels(dimension: Dimension) -> dict[str, str]:
    """Attribute reference → label, for the ``labels`` header of a members table."""
    return {a.ref: a.label for a in dimension.attributes()}


def members_csv(table: pa.Table, labels: Mapping[str, str], header: str = "names"
                ) -> Iterator[bytes]:
    """A members table (keys and labels of a level and its ancestors) as CSV chunks."""
    cols = table.column_names
    return csv_chunks(table, cols, [labels.get(c, c) for c in cols], header)
