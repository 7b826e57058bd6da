"""Cubes 1.1 conformance: Cubes' own remote client, CubesViewer-shaped requests, and Cubes'
own SQL store over the same model.json.

- A Python 3.7 virtual environment with ``cubes==1.1`` and its era's Flask, Werkzeug and
  SQLAlchemy 1.3 (:data:`PINS`) is built once and cached outside the checkout under a
  directory keyed by the pins (``$STATCUBE_CUBES_VENV_DIR``, default
  ``~/.cache/statcube/cubes11-<hash>``). No Python 3.7, or a failed build, FAILS the test
  with the reason — it never skips.
- tests/cubes11/remote_client.py runs Cubes' ``SlicerStore``/``SlicerBrowser`` against a real
  ``statcube serve`` (gunicorn) for every call the client offers; every step must succeed
  except ``facts``/``fact``, which statcube refuses (403) on purpose.
- Raw requests in the shapes CubesViewer 2 sends (its model loading, grid columns keyed by
  aggregate ``ref``, dimension filter members, cell), checked for what its grid reads.
- tests/cubes11/sql_store.py loads model.json into Cubes' own Workspace (validator, every
  cube) and queries it with Cubes' SQL store over the session warehouse loaded into
  PostgreSQL: its counts and means must equal statcube's raw ones (the aggregates mean the
  same thing in both).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server_support import PEPPER, ROOT, Server, start_server, write_config

from cube.pg_load import pg_url as to_pg_url
from cube.query import Request
from cube.sql import sum_col
from cube.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent / "cubes11"
#: What Cubes 1.1 needs, pinned to releases of its era that work together under Python 3.7.
PINS = ("cubes==1.1", "Flask==1.0.4", "Werkzeug==0.16.1", "SQLAlchemy==1.3.24",
        "Jinja2==2.11.3", "MarkupSafe==2.0.1", "itsdangerous==1.1.0", "click==7.1.2",
        "jsonschema==3.2.0", "python-dateutil==2.8.2", "pytz==2024.1", "expressions==0.2.3",
        "grako==3.99.9", "psycopg2-binary==2.9.9")
#: Record-level calls: statcube refuses them on purpose (README, Deviations).
REFUSED = {"facts", "fact"}


def _python37() -> str | None:
    candidates = [os.environ.get("STATCUBE_PY37", ""),
                  *sorted((str(p) for p in (Path.home() / ".pyenv" / "versions").glob(
                      "3.7*/bin/python3.7")), reverse=True), shutil.which("python3.7") or ""]
    # a pyenv shim is not an interpreter: it fails unless 3.7 is the selected version
    return next((c for c in candidates if c and "/shims/" not in c and os.access(c, os.X_OK)),
                None)


def _venv_dir() -> Path:
    key = hashlib.sha256("\n".join(PINS).encode()).hexdigest()[:12]
    base = os.environ.get("STATCUBE_CUBES_VENV_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "statcube") / f"cubes11-{key}"


def _build_venv(target: Path) -> tuple[Path, float]:
    """The cached environment's python, and the seconds spent building it (0 if cached)."""
    python = target / "bin" / "python"
    if (target / "ready").exists():
        return python, 0.0
    py37 = _python37()
    if py37 is None:
        pytest.fail("Cubes 1.1 conformance needs Python 3.7 (cubes 1.1 does not run on newer "
                    "Pythons): none found as $STATCUBE_PY37, python3.7 on PATH or "
                    "~/.pyenv/versions/3.7*/bin/python3.7", pytrace=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs build it once
        if (target / "ready").exists():
            return python, 0.0
        shutil.rmtree(target, ignore_errors=True)
        steps = [[py37, "-m", "venv", str(target)],
                 [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  *PINS]]
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                  check=False)
            if done.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                pytest.fail(f"could not build the Cubes 1.1 environment ({' '.join(cmd[:4])}"
                            f" …): {(done.stderr or done.stdout)[-1500:]}", pytrace=False)
        (target / "ready").write_text("\n".join(PINS) + "\n", encoding="utf-8")
    return python, time.monotonic() - start


@pytest.fixture(scope="module")
def cubes_python() -> Path:
    python, seconds = _build_venv(_venv_dir())
    if seconds:
        print(f"\nbuilt the Cubes 1.1 environment in {seconds:.0f} s", file=sys.stderr)
    return python


@pytest.fixture(scope="module")
def live(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("cubes11")
    cal, keys = write_config(directory, relative=True)
    env = {"STATCUBE_MODEL": str(ROOT / "model.json"), "STATCUBE_WAREHOUSE": str(warehouse),
           "STATCUBE_RELEASES": str(cal), "STATCUBE_API_KEYS": str(keys),
           "STATCUBE_API_KEY_PEPPER": PEPPER, "STATCUBE_RATE_LIMIT_GUEST": "100000/minute"}
    server = start_server(["serve", "--port", "0", "--workers", "1", "--threads", "4"], env,
                          directory / "server.log")
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text(encoding="utf-8")


def _run(python: Path, script: str, *args: str) -> Any:
    done = subprocess.run([str(python), str(HERE / script), *args], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# --- Cubes' own remote client ------------------------------------------------------------


def test_cubes_remote_client_every_call(cubes_python: Path, live: Server) -> None:
    out = _run(cubes_python, "remote_client.py", live.url)
    assert out["cubes_version"] == "1.1"
    steps = {s["step"]: s for s in out["steps"]}
    failed = {n: s.get("error") for n, s in steps.items() if not s["ok"] and n not in REFUSED}
    assert failed == {}, json.dumps([steps[n] for n in failed], indent=1)[:6000]
    for name in REFUSED:  # refused, with statcube's 403 (Cubes raises BackendError/HTTPError)
        assert not steps[name]["ok"] and "403" in steps[name]["error"], steps[name]
    assert len(steps) >= 30
    for name in ("cube:" + c for c in steps["list_cubes"]["result"]):
        assert "aggregates" in steps[name]["result"]

    r = steps["aggregate_cut_drill"]["result"]
    assert r["levels"] == {"geography": ["country", "region"]}
    assert len(r["cells"]) == 9 and r["summary"]["claimants"] > 0
    assert steps["aggregate_hierarchy"]["result"]["levels"] == {
        "geography@constituency": ["country", "region"]}
    assert steps["aggregate_split"]["result"]["levels"] == {
        "tenure": ["tenure"], "__within_split__": ["__within_split__"]}
    ordered = [c["claimants"] for c in steps["aggregate_order_page"]["result"]["cells"]]
    assert len(ordered) == 2 and ordered == sorted(ordered, reverse=True)

    # members arrive as JSON Lines: one member per line, typed keys
    assert [m["tenure.tenure_code"] for m in steps["members"]["result"]] == [
        "social_la", "social_ha", "private", "other"]
    regions = steps["members_level"]["result"]
    assert len(regions) == 9 and regions[0]["geography.country_code"] == "E92000001"
    assert steps["members_attributes"]["result"][0] == {
        "geography.region_name": regions[0]["geography.region_name"]}
    names = [m["geography.region_name"] for m in steps["members_order"]["result"]]
    assert names == sorted(names, reverse=True)
    paged = steps["members_paged"]["result"]
    assert len(paged) == 3 and all(isinstance(m["time.year"], int) for m in paged)

    # SlicerBrowser.cell_details() hands back the /cell response as it came
    geo, tenure, time_ = (c["details"] for c in steps["cell_details"]["result"]["cuts"])
    assert [e["_key"] for e in geo] == ["E92000001", "E12000007"]
    assert geo[1]["geography.region_name"] == "London"
    assert tenure == [[{"tenure.tenure_code": "private", "tenure.tenure_name": "Private rented",
                        "tenure.tenure_order": 3, "_key": "private",
                        "_label": "Private rented"}], None]  # no member 'nope': null
    assert time_["from"][1]["_key"] == 6 and time_["to"][1]["_label"] == "Aug 2026"
    assert [c["dimension"] for c in steps["cell_details_dimension"]["result"]["cuts"]] == [
        "geography"]
    assert {p["name"] for p in out["patches"]} >= {"string_from_cuts import",
                                                   "SlicerModelProvider.has_cube"}


# --- CubesViewer 2 --------------------------------------------------------------------------


def _get(live: Server, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    code, _, body = live.get(f"{path}?{query}" if query else path)
    assert code == 200, (path, params, body[:500])
    return json.loads(body)


def test_cubesviewer_requests(live: Server) -> None:
    """The requests CubesViewer 2 makes and what it reads of the answers: cubes.js connects
    with /info (cubes_version) and /cubes, builds each cube from /model; the explore view
    sends drilldown and cut only (``dim@hier:level``, ``dim@hier:path`` — it names even the
    default hierarchy) and fills its grid columns and summary row with ``cell[ag.ref]`` and
    ``summary[ag.ref]`` for every aggregate of the model, and its row keys from each level's
    key and label attributes; the dimension filter lists members with hierarchy and depth."""
    info = _get(live, "/info")
    assert info["cubes_version"] == "1.1" and info["api_version"] == 2
    for summary in _get(live, "/cubes"):
        model = _get(live, f"/cube/{summary['name']}/model")
        for a in model["aggregates"]:
            assert a["ref"] == a["name"] and a["label"]
        for m in model["measures"]:
            assert m["ref"] == m["name"]
        for dim in model["dimensions"]:
            hier = next(h for h in dim["hierarchies"]
                        if h["name"] == dim["default_hierarchy_name"])
            levels = {lv["name"]: lv for lv in dim["levels"]}
            for name in hier["levels"]:
                attrs = {a["name"]: a["ref"] for a in levels[name]["attributes"]}
                assert levels[name]["key"] in attrs and levels[name]["label_attribute"] in attrs
                assert all(r.startswith(dim["name"] + ".") for r in attrs.values())
    hb = "/cube/housing_benefit"
    model = _get(live, f"{hb}/model")
    refs = [a["ref"] for a in model["aggregates"]]
    geo = next(d for d in model["dimensions"] if d["name"] == "geography")
    region = next(lv for lv in geo["levels"] if lv["name"] == "region")
    body = _get(live, f"{hb}/aggregate", drilldown="geography@ons:region,tenure@default:tenure",
                cut="geography@ons:E92000001")
    assert body["levels"] == {"geography": ["country", "region"], "tenure": ["tenure"]}
    assert len(body["cells"]) == 9 * 4
    for cell in body["cells"]:  # every grid column and the row key have their value
        assert all(ref in cell for ref in refs)
        assert cell[f"geography.{region['key']}"] and cell[f"geography.{region['label_attribute']}"]
    assert all(ref in body["summary"] for ref in refs)
    assert body["cell"][0]["hidden"] is False
    other = _get(live, f"{hb}/aggregate", drilldown="geography@constituency:region",
                 cut="geography@constituency:E92000001")
    assert other["levels"] == {"geography@constituency": ["country", "region"]}
    members = _get(live, f"{hb}/members/geography", hierarchy="ons", depth="3")
    assert members["data"] and {"geography.la_code", "geography.la_name"} <= set(
        members["data"][0])
    # a filter on a selected value: cut as the dimension filter writes it (values by ';')
    picked = _get(live, f"{hb}/aggregate", drilldown="tenure@default:tenure",
                  cut="tenure@default:private;other")
    assert sorted(c["tenure.tenure_code"] for c in picked["cells"]) == ["other", "private"]
    # statcube refuses to list every OA or LSOA at once: the filter gets a 400 naming pagesize
    code, _, err = live.get(f"{hb}/members/geography?hierarchy=ons&depth=6")
    assert code == 400 and json.loads(err)["parameter"] == "pagesize"


# --- Cubes' own SQL store over the same model.json --------------------------------------------


def test_cubes_sql_store_reads_the_same_model(cubes_python: Path, workspace: Workspace,
                                              pg_url: str, pg_schema: str,
                                              pg_warehouse: str) -> None:
    """Cubes validates model.json, loads every cube (nino_registrations included) and, with
    its own SQL store over the PostgreSQL warehouse, computes the same raw counts, totals
    and means statcube computes before protection (so the names and functions mean the
    same in both). Raw values stay inside this test."""
    queries: dict[str, dict[str, str]] = {}
    for name in workspace.cube_names:
        browser = workspace.cube(name)
        period = browser.latest_period
        assert period is not None
        cut = (f"time:{period[0]},{(period[1] - 1) // 3 + 1}" if browser.cube.grain == "quarter"
               else f"time:{period[0]},{(period[1] - 1) // 3 + 1},{period[1]}")
        queries[name] = {"cube": name, "cut": cut, "drilldown": "geography",
                         "key": "geography.country_code"}
    # psycopg2 for SQLAlchemy 1.3, the search path given to Cubes as its schema option
    url = to_pg_url(pg_url).set(drivername="postgresql+psycopg2", query={}).render_as_string(
        hide_password=False)
    out = _run(cubes_python, "sql_store.py", str(ROOT / "model.json"), url, pg_schema,
               json.dumps(queries))
    assert out["validation_errors"] == []
    assert sorted(out["cubes"]) == sorted(workspace.cube_names)
    for name, q in queries.items():
        browser = workspace.cube(name)
        raw = browser._raw_aggregate(browser.query(Request.make(
            name, cut=q["cut"], drilldown="geography:country")))
        want = {}
        for row in raw.cells.to_pylist():
            values: dict[str, float] = {}
            for a in browser.cube.aggregates:
                n = row["__n"]
                if a.measure.kind == "count":
                    values[a.name] = n
                elif a.function == "sum":
                    values[a.name] = row[sum_col(a.measure.name)]
                else:  # statcube's mean: the total over the count
                    values[a.name] = row[sum_col(a.measure.name)] / n
            want[row["geography.country_code"]] = values
        got = out["queries"][name]
        assert got.keys() == want.keys() and len(want) == 3, name
        for key, values in want.items():
            assert got[key] == pytest.approx(values, rel=1e-9), (name, key)
