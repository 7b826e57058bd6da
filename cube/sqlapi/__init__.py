"""The SQL surface: cubes as PostgreSQL tables, for BI tools (issue 18).

Map, in the order a statement flows:

- ``surface.py`` — each cube as a table (its level attributes and aggregates as columns) and
  the translation of one ``SELECT`` over it (parsed by sqlglot) into the same
  :class:`~cube.query.Request` the HTTP API builds, answered by the same gate
  (``CubeBrowser.aggregate_query``); everything else is refused with a SQLSTATE.
- ``catalog.py``  — ``pg_catalog``, ``information_schema``, ``version()`` and friends, answered
  from small tables in an in-memory DuckDB, so that drivers and BI tools can list schemas
  (one per release), tables (cubes) and columns.
- ``session.py``  — one client's session: its role, its release (``search_path``), ``SET`` and
  ``SHOW``, transaction no-ops, and the routing of a statement to the catalog or a cube.

The wire protocol lives outside the core (package ``wire``); nothing here does network I/O or
imports the HTTP layer or the command line.
"""
