"""A DataFrame's rows to the driver as a stream of Arrow record batches, in order.

Why not ``toArrow()``: it collects the whole result on the driver first, so an export's
driver memory grows with the largest period of the largest grain. Why not
``toLocalIterator()`` alone: it yields Python ``Row`` objects, far slower to turn back into
Arrow than the result was to compute. Here each partition's rows are Arrow-serialised on the
executors (``mapInArrow``: one IPC message per batch, as a binary row) and fetched one
partition at a time with ``toLocalIterator(prefetchPartitions=True)``: the driver holds about
one partition (plus the next one, fetched while the caller writes), and the caller's writing
overlaps Spark computing the next partition. Partition order and the order within each
partition are kept, so a sorted query streams sorted.

Driver memory is bounded by a partition, not a batch: for a query ending in ``ORDER BY``,
``spark.sql.shuffle.partitions`` sets how many pieces a result is cut into.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def _serialise(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: each non-empty batch as one Arrow IPC stream in one binary cell."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        yield pa.RecordBatch.from_arrays([pa.array([sink.getvalue().to_pybytes()], pa.binary())],
                                         names=["ipc"])


def batches(df: DataFrame, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of ``df`` as record batches, in order; cast to ``schema`` when given."""
    names = list(df.columns)
    # Positional names on the way: mapInArrow resolves each column by name, and result
    # columns may hold dots ("geography.la_code").
    plain = df.toDF(*(f"_c{i}" for i in range(len(names))))
    rows = plain.mapInArrow(_serialise, "ipc binary").toLocalIterator(prefetchPartitions=True)
    for row in rows:
        for part in pa.ipc.open_stream(row[0]):
            batch = pa.RecordBatch.from_arrays(part.columns, names=names)
            yield batch if schema is None or batch.schema == schema else batch.cast(schema)


def arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema ``df.toArrow()`` gives (from an empty result: no data is read)."""
    return df.limit(0).toArrow().schema


def stream(df: DataFrame, schema: pa.Schema, batch_rows: int) -> pa.RecordBatchReader:
    """A reader of ``df``'s rows in batches of at most ``batch_rows`` (small ones merged up to
    it), with ``schema``. The first partition is fetched now, so the query runs in the
    caller's thread (exports open the next period's stream while writing the current one)."""
    source = batches(df, schema)
    first = next(source, None)

    def chunks() -> Iterator[pa.RecordBatch]:
        if first is None:
            return
        pending: list[pa.RecordBatch] = [first]
        rows = first.num_rows
        for batch in source:
            if rows + batch.num_rows > batch_rows and pending:
                yield from _merged(pending, schema, batch_rows)
                pending, rows = [], 0
            pending.append(batch)
            rows += batch.num_rows
        yield from _merged(pending, schema, batch_rows)

    return pa.RecordBatchReader.from_batches(schema, chunks())


def _merged(pending: list[pa.RecordBatch], schema: pa.Schema, batch_rows: int
            ) -> Iterator[pa.RecordBatch]:
    table = pa.Table.from_batches(pending, schema).combine_chunks()
    yield from table.to_batches(max_chunksize=batch_rows)
