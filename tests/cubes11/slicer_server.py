"""Serve statcube's model.json with Cubes 1.1's own Slicer (its Flask blueprint and SQL store)
over a statcube warehouse loaded into PostgreSQL, for bench/bench_cubes.py.

Run in the Cubes 1.1 virtual environment (Python 3.7, see tests/test_cubes_conformance.py):

    python slicer_server.py MODEL_JSON SQLALCHEMY_URL SCHEMA

Listens on a free port of 127.0.0.1, prints ``listening on http://127.0.0.1:PORT`` once ready
and serves one request at a time (Werkzeug's single-threaded server: the benchmark is
sequential) until killed. Cubes is configured as a Slicer deployment would be: the SQL store
with its default browser, no authentication, its default request log handler. Nothing in
Cubes is patched; this file imports nothing from statcube.
"""

import logging
import sys

from cubes import compat
from cubes.server import create_server
from werkzeug.serving import make_server


def main(model_path, url, schema):
    config = compat.ConfigParser()
    config.add_section("workspace")
    config.set("workspace", "log_level", "error")
    config.add_section("server")
    config.set("server", "json_record_limit", "100000")
    config.add_section("store")
    config.set("store", "type", "sql")
    config.set("store", "url", url)
    config.set("store", "schema", schema)
    config.add_section("models")
    config.set("models", "main", model_path)
    app = create_server(config)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    server = make_server("127.0.0.1", 0, app)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
