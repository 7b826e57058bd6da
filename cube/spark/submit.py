"""The ``spark-submit`` entry point: ``python -m cube.spark.submit`` builds one release.

    spark-submit --master yarn "$(python -c 'import cube.spark.submit as m; print(m.__file__)')" \\
        --input hdfs://nn/statcube/in --out /srv/statcube/warehouse \\
        --parquet-out hdfs://nn/statcube/releases

``--input`` is a folder or a URI Spark can read (listed and read through Hadoop's
FileSystem, with the cluster's configuration and credentials); ``--out`` the driver's local
folder for the DuckDB warehouse; ``--parquet-out`` where the Parquet tree goes (default beside
the warehouse).

The master and the cluster's settings come from ``spark-submit`` (this module calls
``getOrCreate``); the record-key secret from ``STATCUBE_KEY_FILE`` or ``STATCUBE_KEY_SECRET``
on the driver (it reaches executors only as a broadcast variable); the model from ``--model``
or ``STATCUBE_MODEL``. Bad input prints one line per problem and exits 2, like ``statcube``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cube.build import BuildOptions
from cube.errors import StatcubeError
from cube.model import default_model_path, load_model
from cube.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cube.spark.submit",
                                     description="build a statcube release on Spark")
    parser.add_argument("--input", required=True, help="directory or URI with geography/ and "
                                                        "microdata/ (visible to every node)")
    parser.add_argument("--out", required=True, help="warehouse directory (driver-local)")
    parser.add_argument("--parquet-out", help="folder or URI for <release>.parquet/ "
                                              "(default: beside the warehouse)")
    parser.add_argument("--release", help="release id (default: the latest month)")
    parser.add_argument("--model", help="model.json (default STATCUBE_MODEL, else packaged)")
    parser.add_argument("--master", help="Spark master URL (default: spark-submit's)")
    parser.add_argument("--skip-bad-rows", action="store_true")
    args = parser.parse_args(argv)
    from cube.spark.build import SparkBuildOptions, build_spark
    from cube.spark.fs import is_uri
    from cube.spark.session import session

    try:
        settings = Settings.from_env(model=args.model)
        path = Path(settings.model)
        model = load_model(path if path.exists() else default_model_path())
        secret = settings.secret()
        inp: Path | str = args.input if is_uri(args.input) else Path(args.input)
        rep = build_spark(model, inp, Path(args.out), secret, session(args.master),
                          BuildOptions(release=args.release, skip_bad_rows=args.skip_bad_rows),
                          SparkBuildOptions(parquet_out=args.parquet_out))
    except StatcubeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in getattr(exc, "problems", ()):
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"built {rep.warehouse} (release {rep.release}) on Spark in {rep.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
