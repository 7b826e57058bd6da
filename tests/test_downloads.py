"""Export downloads: the /exports catalogue and files, with Range, ETag and the embargo — and
the attacks on them (turn 1 measured each one succeeding):

- an export made without a calendar held months still under embargo and was served;
- a grain directory that was a symlink to an embargoed export was served;
- nothing tied an export to the release calendar or to the warehouse build it came from.

An export is served only if the calendar publishes its release to the caller, its recorded last
period and warehouse build are the calendar's and the served warehouse's, and no symlink stands
anywhere below the export root. Everything else is the one 404 body of an unknown path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import pytest
from flask.testing import FlaskClient
from test_server_support import KEYS, NOW, PEPPER, check_error, write_config

from cli.main import main
from cube.export import DATAPACKAGE, export_grain
from cube.releases import build_id
from cube.settings import Settings
from cube.workspace import Workspace
from server.app import create_app

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "model.json")
PRE = {"APIKey": KEYS["prerelease"]}
LA_ALL = "/exports/2026-11/sanctions/la_all"
EMBARGOED = "/exports/2027-02/sanctions/la_all"
UNKNOWN_PATH = "/exports/no-such-release/no_cube/no_grain/no-file.parquet"


@dataclass(frozen=True)
class Setup:
    directory: Path
    exports: Path   # 2026-11 (published, data to August) and 2027-02 (embargoed) of sanctions
    foreign: Path   # outside the export root: a 2026-11 export with a record that matches
    calendar: Path
    keys: Path
    warehouse: Path


@pytest.fixture(scope="module")
def setup(workspace: Workspace, warehouse: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Setup:
    directory = tmp_path_factory.mktemp("downloads")
    exports, foreign = directory / "exports", directory / "foreign"
    for release, until in (("2026-11", (2026, 8)), ("2027-02", (2026, 11))):
        export_grain(workspace.view(until), "sanctions", "la_all", exports, release=release)
    export_grain(workspace.view((2026, 8)), "sanctions", "la_all", foreign, release="2026-11")
    cal, keys = write_config(directory, relative=False)
    return Setup(directory, exports, foreign, cal, keys, warehouse)


def client_for(s: Setup, exports: Path | None = None, warehouse: Path | None = None
               ) -> FlaskClient:
    app = create_app(Settings(model=MODEL, warehouse=str(warehouse or s.warehouse),
                              releases=str(s.calendar), api_keys=str(s.keys),
                              api_key_pepper=PEPPER, export_dir=str(exports or s.exports),
                              data_dir=str(s.directory), rate_limit_guest="100000/minute"),
                     clock=lambda: NOW)
    return app.test_client()


@pytest.fixture(scope="module")
def client(setup: Setup) -> Iterator[FlaskClient]:
    yield client_for(setup)


@pytest.fixture
def tree(setup: Setup, tmp_path: Path) -> Path:
    """A private copy of the export root (symlinks kept as symlinks) to tamper with."""
    return Path(shutil.copytree(setup.exports, tmp_path / "exports", symlinks=True))


def get(client: FlaskClient, url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    with client.get(url, headers=headers) as resp:
        return resp.status_code, resp.get_data(), dict(resp.headers)


def listed(client: FlaskClient, headers: Mapping[str, str] | None = None) -> set[str]:
    """Every download URL path the catalogue gives the caller."""
    cat = client.get("/exports", headers=dict(headers or {})).get_json()
    return {f["url"].replace("http://localhost", "") for r in cat["exports"]
            for grains in r["cubes"].values() for g in grains for f in g["files"]}


def assert_not_found(client: FlaskClient, path: str, headers: Mapping[str, str] | None = None
                     ) -> None:
    """404 with exactly the body of a path that does not exist (bar the path and request id):
    the answer does not tell an embargoed or tampered export from no export at all."""
    def body(p: str) -> dict[str, Any]:
        with client.get(p, headers=dict(headers or {})) as resp:
            assert resp.status_code == 404, (p, resp.status_code)
            assert resp.headers["Content-Type"] == "application/json"
            out = resp.get_json()
        check_error(out, "not_found")
        del out["request_id"]
        return dict(out)

    expected = json.loads(json.dumps(body(UNKNOWN_PATH)).replace(UNKNOWN_PATH, unquote(path)))
    assert body(path) == expected


def partition(release_path: str, month: str) -> str:
    return f"{release_path}/data/period={month}/part-0.parquet"


def provenance(grain_dir: Path) -> dict[str, Any]:
    package = json.loads((grain_dir / DATAPACKAGE).read_text(encoding="utf-8"))
    return dict(package["statcube"]["provenance"])


def edit_provenance(grain_dir: Path, **changes: Any) -> None:
    path = grain_dir / DATAPACKAGE
    package = json.loads(path.read_text(encoding="utf-8"))
    for k, v in changes.items():
        if v is None:
            package["statcube"]["provenance"].pop(k, None)
        else:
            package["statcube"]["provenance"][k] = v
    path.write_text(json.dumps(package), encoding="utf-8")


# --- what is served -------------------------------------------------------------------------

def test_catalogue_lists_published_exports_with_sizes_and_checksums(client: FlaskClient
                                                                     ) -> None:
    cat = client.get("/exports").get_json()
    assert [r["release"] for r in cat["exports"]] == ["2026-11"]  # 2027-02 is embargoed
    (grain,) = cat["exports"][0]["cubes"]["sanctions"]
    assert grain["grain"] == "la_all"
    names = {f["path"] for f in grain["files"]}
    assert {"datapackage.json", "README.txt", "SHA256SUMS"} <= names
    assert any(n.startswith("data/period=2026-08/") for n in names)
    assert not any("2026-09" in n or "2026-11" in n for n in names)  # later months embargoed
    for f in grain["files"]:
        status, body, _ = get(client, f["url"].replace("http://localhost", ""))
        assert status == 200 and len(body) == f["bytes"]
        if f["sha256"]:
            assert hashlib.sha256(body).hexdigest() == f["sha256"]
    # Prerelease keys see the embargoed release too.
    pre = client.get("/exports", headers=PRE).get_json()
    assert [r["release"] for r in pre["exports"]] == ["2026-11", "2027-02"]


def test_downloads_support_range_etag_and_last_modified(client: FlaskClient) -> None:
    url = partition(LA_ALL, "2026-08")
    status, whole, headers = get(client, url)
    assert status == 200 and "ETag" in headers and "Last-Modified" in headers
    assert headers.get("Accept-Ranges") == "bytes"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert headers["Content-Length"] == str(len(whole))
    status, part, headers = get(client, url, Range="bytes=0-3")
    assert status == 206 and part == whole[:4] == b"PAR1"
    assert headers["Content-Range"] == f"bytes 0-3/{len(whole)}"
    status, body, _ = get(client, url, **{"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


@pytest.mark.parametrize("path", [
    f"{EMBARGOED}/datapackage.json",                            # embargoed release
    partition(EMBARGOED, "2026-11"),
    "/exports/2026-11/sanctions/la_all/../../../../etc/passwd",  # traversal
    "/exports/2026-11/sanctions/la_all/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    f"{LA_ALL}/manifest.json",                                  # not a listed file
    f"{LA_ALL}/data/period=2026-11/part-0.parquet",             # a month the release lacks
    "/exports/2026-11/sanctions/oa/datapackage.json",           # not exported
    "/exports/1999-01/sanctions/la_all/datapackage.json",       # unknown release
    "/exports/2026-11/sanctions/.la_all.lock/datapackage.json",  # hidden
])
def test_anything_not_published_and_listed_is_the_one_404(client: FlaskClient, path: str
                                                          ) -> None:
    assert_not_found(client, path)


def test_a_prerelease_key_downloads_an_unpublished_release_a_guest_cannot(client: FlaskClient
                                                                          ) -> None:
    url = partition(EMBARGOED, "2026-11")
    assert url not in listed(client)
    assert_not_found(client, url)
    assert url in listed(client, PRE)
    status, body, headers = get(client, url, **PRE)
    assert status == 200 and body[:4] == b"PAR1"
    assert headers["Cache-Control"] == "private, no-store"  # never in a shared cache
    # registered keys are not embargo-exempt
    assert_not_found(client, url, {"APIKey": KEYS["registered"]})


# --- attacks: exports the calendar or the warehouse do not vouch for ---------------------------

def test_an_export_made_without_a_calendar_is_not_served_under_one(setup: Setup,
                                                                   tmp_path: Path) -> None:
    """Turn 1's attack: `statcube export` with no calendar wrote every month as release
    2026-11; served under a calendar whose 2026-11 ends in August, guests got November."""
    out = tmp_path / "exports"
    assert main(["--model", MODEL, "--data-dir", str(tmp_path / "no-calendar"), "export",
                 "--warehouse", str(setup.warehouse), "--cube", "sanctions",
                 "--grain", "la_all", "--out", str(out)]) == 0
    client = client_for(setup, out)
    for headers in ({}, PRE, {"APIKey": KEYS["admin"]}):
        assert listed(client, headers) == set()
        for month in ("2026-08", "2026-11"):
            assert_not_found(client, partition(LA_ALL, month), headers)
    # What it recorded: the warehouse as its own release, complete, with no calendar.
    prov = provenance(out / "2026-11" / "sanctions" / "la_all")
    assert (prov["release"], prov["last_period"], prov["published"]) == \
        ("2026-11", "2026-11", None)


def test_the_cli_exports_the_latest_published_release_of_the_calendar_in_force(
        setup: Setup, workspace: Workspace, tmp_path: Path) -> None:
    """`statcube export` with the demo's DATA_DIR/releases.toml: release 2026-11 (published
    ten days ago, data to August), never the embargoed months — and the server serves it."""
    data = tmp_path / "data"
    write_config(data, relative=True)
    out = tmp_path / "exports"
    assert main(["--model", MODEL, "--data-dir", str(data), "export", "--warehouse",
                 str(setup.warehouse), "--cube", "sanctions", "--grain", "la_all",
                 "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["2026-11"]
    grain_dir = out / "2026-11" / "sanctions" / "la_all"
    assert sorted(p.name for p in (grain_dir / "data").iterdir()) == [
        "period=2026-06", "period=2026-07", "period=2026-08"]
    package = json.loads((grain_dir / DATAPACKAGE).read_text(encoding="utf-8"))
    prov = package["statcube"]["provenance"]
    assert prov["release"] == "2026-11" and prov["last_period"] == "2026-08"
    assert prov["published"] is not None and package["created"] == prov["published"]
    assert prov["warehouse_build"] == build_id(workspace.meta)
    assert prov["warehouse_built_at"] == workspace.meta["built_at"]
    assert package["statcube"]["periods"] == ["2026-06", "2026-07", "2026-08"]
    app = create_app(Settings(model=MODEL, warehouse=str(setup.warehouse), data_dir=str(data),
                              export_dir=str(out), rate_limit_guest="100000/minute"))
    client = app.test_client()
    urls = listed(client)
    assert partition(LA_ALL, "2026-08") in urls
    assert get(client, partition(LA_ALL, "2026-08"))[0] == 200


def test_an_unpublished_release_is_exported_only_when_asked_for_as_a_prerelease(
        setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_config(data, relative=True)
    out = tmp_path / "exports"
    argv = ["--model", MODEL, "--data-dir", str(data), "export", "--warehouse",
            str(setup.warehouse), "--cube", "sanctions", "--grain", "la_all", "--out",
            str(out), "--release", "2027-02"]
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "release '2027-02' is not published until" in err and "--prerelease" in err
    assert not out.exists()
    assert main([*argv, "--prerelease"]) == 0
    grain_dir = out / "2027-02" / "sanctions" / "la_all"
    assert provenance(grain_dir)["last_period"] == "2026-11"
    app = create_app(Settings(model=MODEL, warehouse=str(setup.warehouse), data_dir=str(data),
                              api_keys=str(data / "keys.toml"), api_key_pepper=PEPPER,
                              export_dir=str(out), rate_limit_guest="100000/minute"))
    client = app.test_client()
    url = partition(EMBARGOED, "2026-11")
    assert url not in listed(client)
    assert_not_found(client, url)
    assert url in listed(client, PRE)
    assert get(client, url, **PRE)[0] == 200


def test_an_unknown_release_is_refused_in_one_line(setup: Setup, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_config(data, relative=True)
    assert main(["--model", MODEL, "--data-dir", str(data), "export", "--warehouse",
                 str(setup.warehouse), "--release", "2026-12", "--prerelease",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown release '2026-12'" in err and "Traceback" not in err


@pytest.mark.parametrize("change", [
    {"warehouse_build": "0" * 64},                 # made from another build
    {"last_period": "2026-11"},                    # holds more than the release
    {"last_period": "2026-07"},                    # holds less than the release
    {"release": "2027-02"},                        # another release's export, moved
    {"grain": "oa"},                               # another grain's export, moved
    {"last_period": None},                         # no record
    {"warehouse_build": None},
])
def test_an_export_whose_record_does_not_match_is_not_served(setup: Setup, tree: Path,
                                                             change: dict[str, Any]) -> None:
    edit_provenance(tree / "2026-11" / "sanctions" / "la_all", **change)
    client = client_for(setup, tree)
    for headers in ({}, PRE):
        assert not any(u.startswith(LA_ALL) for u in listed(client, headers))
        assert_not_found(client, partition(LA_ALL, "2026-08"), headers)
        assert_not_found(client, f"{LA_ALL}/datapackage.json", headers)


def test_no_record_at_all_is_not_served(setup: Setup, tree: Path) -> None:
    path = tree / "2026-11" / "sanctions" / "la_all" / DATAPACKAGE
    package = json.loads(path.read_text(encoding="utf-8"))
    del package["statcube"]["provenance"]
    path.write_text(json.dumps(package), encoding="utf-8")
    client = client_for(setup, tree)
    assert listed(client, PRE) == {u for u in listed(client_for(setup), PRE)
                                   if not u.startswith(LA_ALL)}
    assert_not_found(client, f"{LA_ALL}/README.txt", PRE)


def test_exports_of_an_older_build_are_not_served_from_a_rebuilt_warehouse(
        setup: Setup, tmp_path: Path) -> None:
    rebuilt = tmp_path / "rebuilt.duckdb"
    shutil.copyfile(setup.warehouse, rebuilt)
    con = duckdb.connect(str(rebuilt))
    con.execute("UPDATE statcube_meta SET value = ? WHERE key = 'built_at'",
                [json.dumps("2099-01-01T00:00:00+00:00")])
    con.close()
    client = client_for(setup, warehouse=rebuilt)
    assert listed(client, PRE) == set()
    assert_not_found(client, partition(LA_ALL, "2026-08"))


def _link(link: Path, target: Path) -> None:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())


@pytest.mark.parametrize(("link", "target", "urls"), [
    # a grain directory → the embargoed export (turn 1's attack)
    ("2026-11/sanctions/oa", "2027-02/sanctions/la_all",
     ["/exports/2026-11/sanctions/oa/datapackage.json",
      partition("/exports/2026-11/sanctions/oa", "2026-11")]),
    # a grain directory → an export outside the root whose record matches
    ("2026-11/sanctions/la_all", "@foreign/2026-11/sanctions/la_all",
     [f"{LA_ALL}/datapackage.json", partition(LA_ALL, "2026-08")]),
    # a cube directory, a release directory → outside the root
    ("2026-11/sanctions", "@foreign/2026-11/sanctions", [partition(LA_ALL, "2026-08")]),
    ("2026-11", "@foreign/2026-11", [partition(LA_ALL, "2026-08")]),
    # a release directory → the embargoed release, inside the root
    ("2026-11", "2027-02", [partition(LA_ALL, "2026-11"), partition(LA_ALL, "2026-08")]),
    # a partition directory and a file → embargoed data
    ("2026-11/sanctions/la_all/data/period=2026-08", "2027-02/sanctions/la_all/data/"
     "period=2026-11", [partition(LA_ALL, "2026-08")]),
    ("2026-11/sanctions/la_all/data/period=2026-08/part-0.parquet",
     "2027-02/sanctions/la_all/data/period=2026-11/part-0.parquet",
     [partition(LA_ALL, "2026-08")]),
    ("2026-11/sanctions/la_all/README.txt", "/etc/passwd", [f"{LA_ALL}/README.txt"]),
])
def test_a_symlink_at_any_depth_is_not_followed(setup: Setup, tree: Path, link: str,
                                                target: str, urls: list[str]) -> None:
    resolved = setup.foreign / target[len("@foreign/"):] if target.startswith("@foreign/") \
        else Path(target) if target.startswith("/") else tree / target
    _link(tree / link, resolved)
    client = client_for(setup, tree)
    for headers in ({}, PRE):
        shown = listed(client, headers)
        for url in urls:
            assert url not in shown
            assert_not_found(client, url, headers)


def test_hidden_and_partial_directories_are_not_served(setup: Setup, tree: Path) -> None:
    cube_dir = tree / "2026-11" / "sanctions"
    shutil.copytree(cube_dir / "la_all", cube_dir / ".oa.partial")
    shutil.copytree(cube_dir / "la_all", tree / "2026-11" / ".sanctions" / "la_all")
    client = client_for(setup, tree)
    assert not any(".oa" in u or ".sanctions" in u for u in listed(client, PRE))
    assert_not_found(client, "/exports/2026-11/sanctions/.oa.partial/datapackage.json", PRE)
    assert_not_found(client, "/exports/2026-11/.sanctions/la_all/datapackage.json", PRE)


@pytest.mark.parametrize(("range_", "status"), [
    ("bytes=abc", 200),            # invalid: ignored (RFC 9110 §14.2), the whole file
    ("bytes=5-2", 200),            # invalid (last < first): ignored
    ("items=0-3", 200),            # a unit the server does not know: ignored
    ("bytes=0-3,8-11", 200),       # several ranges: the whole file (never a 416)
    ("bytes=0-3", 206),
    ("bytes=-4", 206),             # the last 4 bytes
    ("bytes=999999999-", 416),     # unsatisfiable: 416 with Content-Range: bytes */size
])
def test_range_follows_rfc_9110(client: FlaskClient, range_: str, status: int) -> None:
    url = partition(LA_ALL, "2026-08")
    _, whole, _ = get(client, url)
    code, body, headers = get(client, url, Range=range_)
    assert code == status, (range_, code, headers)
    if status == 200:
        assert body == whole and headers["Content-Length"] == str(len(whole))
    elif status == 206:
        assert len(body) == 4 and body in (whole[:4], whole[-4:])
        assert headers["Content-Range"].endswith(f"/{len(whole)}")
    else:
        assert headers["Content-Range"] == f"bytes */{len(whole)}"
        check_error(json.loads(body), "range_not_satisfiable")


def test_if_none_match_star_is_304_on_downloads_and_the_api(client: FlaskClient) -> None:
    """``If-None-Match: *`` matches any current representation (RFC 9110 §13.1.2): 304 on a
    download and on an API response alike (the API used to ignore it and answer 200)."""
    assert get(client, partition(LA_ALL, "2026-08"), **{"If-None-Match": "*"})[0] == 304
    assert get(client, "/cube/sanctions/aggregate?drilldown=geography:region",
               **{"If-None-Match": "*"})[0] == 304
    assert get(client, "/no/such/thing", **{"If-None-Match": "*"})[0] == 404


def test_double_slash_paths_are_not_redirected_from_the_host_header(client: FlaskClient
                                                                    ) -> None:
    code, _, headers = get(client, f"{LA_ALL}//etc/passwd", Host="evil.example")
    assert code == 404 and "Location" not in headers
    code, _, headers = get(client, "//cubes", Host="evil.example")
    assert code == 404 and "Location" not in headers


def test_datapackage_content_type_matches_the_openapi_document(client: FlaskClient) -> None:
    _, _, headers = get(client, f"{LA_ALL}/datapackage.json")
    doc = client.get("/openapi.json").get_json()
    op = doc["paths"]["/exports/{release}/{cube}/{grain}/{name}"]["get"]
    declared = set(op["responses"]["200"]["content"])
    assert headers["Content-Type"].split(";")[0] in declared
    _, _, headers = get(client, partition(LA_ALL, "2026-08"))
    assert headers["Content-Type"].split(";")[0] in declared
