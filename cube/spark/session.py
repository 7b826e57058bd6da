"""A SparkSession for one machine: tests, the CLI's ``--engine spark`` and benchmarks.

Why these settings: Spark in local mode is still a client/server system (a JVM driver, Python
workers, a web UI). Binding everything to 127.0.0.1 with the UI off means a build opens no port
beyond loopback; a few shuffle partitions and a small driver memory suit small and medium
inputs on a shared 2-core machine. A real cluster ignores this module: ``spark-submit`` brings
its own master and configuration, and :func:`cube.spark.submit.main` calls ``getOrCreate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Settings for a local session (a cluster's spark-defaults.conf is left alone).
LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.memory": "1g",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "static",
    "spark.ui.showConsoleProgress": "false",
}


def local_session(master: str = "local[2]", app: str = "statcube") -> SparkSession:
    """A local SparkSession (or the one already running in this process)."""
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter (this venv, with statcube and pyarrow), not the
    # first python3 on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app)
    for key, value in LOCAL_CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def session(master: str | None = None, app: str = "statcube") -> SparkSession:
    """The session a build runs on: ``local[N]`` gets :func:`local_session`'s loopback-only
    settings; any other master URL (``spark://…``, ``yarn``, ``k8s://…``) only the master, the
    rest coming from the cluster's configuration; None the session ``spark-submit`` made."""
    from pyspark.sql import SparkSession

    if master is not None and master.startswith("local"):
        return local_session(master, app)
    builder = SparkSession.builder.appName(app)
    if master is not None:
        builder = builder.master(master)
    return builder.getOrCreate()
