"""Load statcube's model.json into Cubes 1.1 itself and query it with Cubes' own SQL store
over a statcube warehouse loaded into PostgreSQL (``statcube load-pg``).

Run by tests/test_cubes_conformance.py in its Cubes virtual environment:

    python sql_store.py MODEL_JSON SQLALCHEMY_URL SCHEMA QUERIES_JSON

QUERIES_JSON is ``{"name": {"cube", "cut", "drilldown"}}``. Prints one JSON object:
Cubes' validation errors, the cubes Cubes could load (each linked with all its dimensions)
and, per query, ``{member key: {aggregate: value}}`` as Cubes computed them. Python 3.7; it
imports nothing from statcube and patches nothing in Cubes.
"""

import json
import sys

from cubes import Cell, Workspace, cuts_from_string
from cubes.metadata import read_model_metadata, validate_model


def main(model_path, url, schema, queries):
    metadata = read_model_metadata(model_path)
    errors = [list(e) for e in validate_model(metadata) if e.severity == "error"]
    ws = Workspace()
    ws.register_default_store("sql", url=url, schema=schema)
    ws.import_model(model_path)
    loaded = []
    for name in (c["name"] for c in metadata["cubes"]):
        cube = ws.cube(name)  # links every dimension (the step that failed for nino)
        assert [d.name for d in cube.dimensions]
        loaded.append(name)
    results = {}
    for qname, q in queries.items():
        cube = ws.cube(q["cube"])
        browser = ws.browser(cube)
        cell = Cell(cube, cuts_from_string(cube, q["cut"]))
        result = browser.aggregate(cell, drilldown=[q["drilldown"]])
        key = q["key"]
        results[qname] = {str(row[key]): {a.name: row[a.name] for a in cube.aggregates}
                          for row in result.cells}
    print(json.dumps({"validation_errors": errors, "cubes": loaded, "queries": results},
                     default=float))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
