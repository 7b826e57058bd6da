"""Layer rules, checked by parsing imports (every ``import`` anywhere in a file, also inside
functions and ``TYPE_CHECKING`` blocks).

The core (cube/) is used by three doors — the HTTP layer (server/), the command line (cli/)
and Python users — and must work without any of them: it never imports Flask, the server or
the CLI. The SQL compiler is one pure function over the model and the query. Each row says
which files, which imports they must not make, and why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTTP = ("flask", "flask_cors", "flask_limiter", "werkzeug", "gunicorn", "server")

#: (files, forbidden module prefixes, why)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("cube/**/*.py", HTTP, "the core does not depend on the HTTP layer"),
    ("cube/**/*.py", ("cli",), "the core does not depend on the command line"),
    ("cube/errors.py", ("cube",), "the error hierarchy imports nothing from statcube"),
    ("cube/settings.py", ("cube.model", "cube.workspace", "cube.engine", "cube.releases"),
     "settings are plain values, read before anything is opened"),
    ("cube/sql.py", ("cube.engine", "cube.workspace", "cube.disclosure", "cube.releases",
                     "duckdb", "psycopg", "flask"),
     "SQL compilation is a pure function of the model and the query"),
    ("cube/csvfile.py", (*HTTP, "cube.engine", "cube.workspace"),
     "the CSV writer is pure: protected tables in, bytes out"),
    ("server/**/*.py", ("cli",), "the HTTP layer does not depend on the command line"),
    ("cube/**/*.py", ("wire",), "the core does not depend on the SQL wire server"),
    ("cube/sqlapi/*.py", ("cube.raw", "cube.engine", "psycopg"),
     "the SQL surface reaches values only through the gate (CubeBrowser.aggregate_query)"),
    ("wire/*.py", (*HTTP[:-1], "cli", "server.app", "server.routes", "server.service",
                   "server.limits"),
     "the SQL wire server uses the core and the key store (server.auth), not Flask or the CLI"),
    ("cli/**/*.py", ("flask", "flask_cors", "flask_limiter", "werkzeug"),
     "the command line reaches the server only through server.run (statcube serve)"),
]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.unit
@pytest.mark.parametrize(("pattern", "forbidden", "why"), RULES,
                         ids=[f"{p} !-> {f[0]}" for p, f, _ in RULES])
def test_layer_rule(pattern: str, forbidden: tuple[str, ...], why: str) -> None:
    files = sorted(ROOT.glob(pattern))
    assert files, f"rule {pattern!r} matches no file"
    broken = {str(f.relative_to(ROOT)): sorted(m for m in imports(f)
                                                for p in forbidden if _matches(m, p))
              for f in files}
    assert not {k: v for k, v in broken.items() if v}, why


@pytest.mark.unit
def test_the_compiler_depends_on_nothing_but_the_model_and_the_query() -> None:
    """…and the rollup declarations, which are themselves pure functions of the model."""
    statcube = {m for m in imports(ROOT / "cube" / "sql.py") if _matches(m, "cube")}
    assert {m.rsplit(".", 1)[0] if m.count(".") > 1 else m for m in statcube} == {
        "cube.model", "cube.query", "cube.rollups"}
    rollups = {m for m in imports(ROOT / "cube" / "rollups.py") if _matches(m, "cube")}
    assert {m.rsplit(".", 1)[0] if m.count(".") > 1 else m for m in rollups} == {
        "cube.errors", "cube.model"}


@pytest.mark.unit
def test_the_cli_uses_the_server_only_to_serve() -> None:
    used = {m for f in ROOT.glob("cli/**/*.py") for m in imports(f) if _matches(m, "server")}
    assert used <= {"server.run", "server.run.serve"}


@pytest.mark.unit
def test_the_wire_server_uses_only_the_key_store_of_the_http_layer() -> None:
    used = {m for f in ROOT.glob("wire/*.py") for m in imports(f) if _matches(m, "server")}
    assert {m.rsplit(".", 1)[0] if m.count(".") > 1 else m for m in used} <= {"server.auth"}
