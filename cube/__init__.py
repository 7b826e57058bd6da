"""statcube's core library, in the order a request flows. Nothing here imports Flask,
the HTTP layer (server/) or the command line (cli/).

- ``model``      model.json (Cubes 1.1 format) parsed once into frozen objects; JSON-path errors
- ``grammar``    Slicer cut / drilldown / order strings: parse and format, as pairs
- ``query``      Request (strings as sent) → validated, immutable Query; stock and size rules
- ``sql``        Query → SQLAlchemy Core Select: pure compilation, identifiers from the model
- ``engine``     runs statements on DuckDB (native Arrow) or any SQLAlchemy URL (PostgreSQL)
- ``disclosure`` the one gate: cell key p-table, grammar limits, numpy and SQL protection
- ``workspace``  the Python API: a model over a warehouse, protected results only in public
- ``releases``   release calendar and embargo views
- ``export``     protected Parquet cube exports with Frictionless metadata, resumable
- ``geojson``, ``boundaries``  protected aggregates by area; synthetic and real boundaries
- ``synthetic``, ``geography``, ``keys``, ``build``  inputs → a release warehouse
- ``pg_load``    copy a warehouse into PostgreSQL
- ``csvfile``    CSV of protected results and members: one writer for the API and the CLI
- ``errors``, ``settings``  one error hierarchy; settings declared once
"""
