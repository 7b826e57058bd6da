"""Load run of the SQL API: N concurrent psycopg connections, each running grouped queries
against a running ``statcube sql-serve`` on loopback; reports errors and latency.

    python -m bench.bench_sql --url postgresql://guest@127.0.0.1:5433/statcube --connections 50

Bounded in count (``--queries`` per connection) and sends traffic only to the URL given
(use loopback).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psycopg

QUERIES = (
    "SELECT region_name, MEASURE(claimants) FROM housing_benefit WHERE month = 8 "
    "GROUP BY region_name ORDER BY region_name",
    "SELECT tenure_name, SUM(claimants) FROM housing_benefit WHERE month = 8 AND region_code "
    "IN ('E12000007', 'E12000008') GROUP BY tenure_name",
    "SELECT gender_name, MEASURE(claimants) FROM pip WHERE month = 8 GROUP BY gender_name",
    "SELECT nspname FROM pg_catalog.pg_namespace",
)


def run(url: str, connections: int, queries: int) -> dict[str, float]:
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            with psycopg.connect(url, connect_timeout=30) as conn:
                for k in range(queries):
                    t = time.perf_counter()
                    conn.execute(QUERIES[(i + k) % len(QUERIES)]).fetchall()
                    with lock:
                        latencies.append(time.perf_counter() - t)
        except Exception as exc:  # counted, not raised: the run reports every error
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {"connections": connections, "queries": len(lat), "errors": len(errors),
            "seconds": round(wall, 2), "qps": round(len(lat) / wall, 1),
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else 0.0,
            "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1) if lat else 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="postgresql://guest@127.0.0.1:5433/statcube")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--queries", type=int, default=20)
    a = p.parse_args()
    print(run(a.url, a.connections, a.queries))


if __name__ == "__main__":
    main()
