"""Export downloads: the /exports catalogue and files, with Range, ETag and the embargo."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from test_server_support import KEYS, NOW, PEPPER, write_config

from cube.export import export_grain
from cube.settings import Settings
from cube.workspace import Workspace
from server.app import create_app

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(workspace: Workspace, warehouse: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[FlaskClient]:
    """Releases 2026-11 (published, data to August) and 2027-02 (embargoed) exported."""
    directory = tmp_path_factory.mktemp("downloads")
    exports = directory / "exports"
    for release, until in (("2026-11", (2026, 8)), ("2027-02", (2026, 11))):
        export_grain(workspace.view(until), "sanctions", "la_all", exports, release=release)
    cal, keys = write_config(directory, relative=False)
    app = create_app(Settings(model=str(ROOT / "model.json"), warehouse=str(warehouse),
                              releases=str(cal), api_keys=str(keys), api_key_pepper=PEPPER,
                              export_dir=str(exports), rate_limit_guest="100000/minute"),
                     clock=lambda: NOW)
    yield app.test_client()


def get(client: FlaskClient, url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    with client.get(url, headers=headers) as resp:
        return resp.status_code, resp.get_data(), dict(resp.headers)


def test_catalogue_lists_published_exports_with_sizes_and_checksums(client: FlaskClient
                                                                     ) -> None:
    cat = client.get("/exports").get_json()
    assert [r["release"] for r in cat["exports"]] == ["2026-11"]  # 2027-02 is embargoed
    (grain,) = cat["exports"][0]["cubes"]["sanctions"]
    assert grain["grain"] == "la_all"
    names = {f["path"] for f in grain["files"]}
    assert {"datapackage.json", "README.txt"} <= names
    assert any(n.startswith("data/period=2026-08/") for n in names)
    assert not any("2026-09" in n or "2026-11" in n for n in names)  # later months embargoed
    for f in grain["files"]:
        status, body, _ = get(client, f["url"].replace("http://localhost", ""))
        assert status == 200 and len(body) == f["bytes"]
        if f["sha256"]:
            assert hashlib.sha256(body).hexdigest() == f["sha256"]
    # Prerelease keys see the embargoed release too.
    pre = client.get("/exports", headers={"APIKey": KEYS["prerelease"]}).get_json()
    assert [r["release"] for r in pre["exports"]] == ["2026-11", "2027-02"]


def test_downloads_support_range_etag_and_last_modified(client: FlaskClient) -> None:
    cat = client.get("/exports").get_json()
    f = next(x for x in cat["exports"][0]["cubes"]["sanctions"][0]["files"]
             if x["path"].endswith(".parquet") and x["path"].startswith("data/"))
    url = f["url"].replace("http://localhost", "")
    status, whole, headers = get(client, url)
    assert status == 200 and "ETag" in headers and "Last-Modified" in headers
    assert headers.get("Accept-Ranges") == "bytes"
    status, part, headers = get(client, url, Range="bytes=0-3")
    assert status == 206 and part == whole[:4] == b"PAR1"
    assert headers["Content-Range"] == f"bytes 0-3/{len(whole)}"
    status, body, _ = get(client, url, **{"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


@pytest.mark.parametrize("path", [
    "/exports/2027-02/sanctions/la_all/datapackage.json",      # embargoed release
    "/exports/2026-11/sanctions/la_all/../../../../etc/passwd",  # traversal
    "/exports/2026-11/sanctions/la_all/manifest.json",          # not a listed file
    "/exports/2026-11/sanctions/oa/datapackage.json",           # not exported
    "/exports/1999-01/sanctions/la_all/datapackage.json",       # unknown release
])
def test_anything_not_published_and_listed_is_a_json_404(client: FlaskClient, path: str
                                                          ) -> None:
    with client.get(path) as resp:
        assert resp.status_code == 404
        body = resp.get_json()
    assert body["error"] in {"not_found", "unknown_route"} or body["error"].startswith("not")
    assert "2027-02" not in body.get("message", "") or "no export" in body["message"]
