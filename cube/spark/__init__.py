"""statcube on Apache Spark: the same build, past one machine.

- :mod:`cube.spark.session` — a SparkSession for local runs and tests (``local[N]``, loopback
  only, no UI); under ``spark-submit`` the cluster's own session is used instead.
- :mod:`cube.spark.build` — validate, key and aggregate microdata on Spark; write the facts as
  Parquet partitioned by period, then load them with the dimension tables into the same DuckDB
  release warehouse :func:`cube.build.build` writes (so serving, ``load-pg`` and exports do not
  know which engine built a release).
- :mod:`cube.spark.engine` — runs the disclosure gate's protected SQL on Spark, for
  ``statcube export --engine spark`` (same template, same p-table, same files).
- :mod:`cube.spark.submit` — the ``spark-submit`` entry point (``python -m cube.spark.submit``).
- :mod:`cube.spark.fs` — inputs and outputs at URIs (``hdfs://``, ``s3a://``, ``file://``)
  through Hadoop's FileSystem, and removal of temporary trees left by killed runs.
- :mod:`cube.spark.collect` — results to the driver as a stream of Arrow batches, a
  partition at a time (exports).

pyspark is an optional dependency (``pip install 'statcube[spark]'``, Java 17): nothing else in
statcube imports this package.
"""
