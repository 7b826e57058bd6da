"""The ``statcube`` command line: a thin layer over the core library (cube/), beside the HTTP
layer (server/), never inside the core.

Map, in the order a command runs:

- ``main.py``      — ``main(argv)``: builds the parser, runs a command, turns every ordinary
                     failure into one line on stderr and an exit status (never a traceback)
- ``parsing.py``   — the argument parser: one-line usage errors with "did you mean", options
                     that refuse empty values, a subcommand helper that requires an example
- ``output.py``    — stderr console and progress bars; stdout as bytes; closed pipes and
                     full disks
- ``context.py``   — settings, model and the release a query command answers for (the same
                     calendar and embargo as the server: cube.releases.open_releases)
- ``data.py``      — ``generate``, ``build``, ``demo``, ``serve``
- ``query.py``     — ``aggregate``, ``members``, ``sql``, ``sdc-report``
- ``export.py``    — ``export``
- ``pg.py``        — ``load-pg``
- ``settings.py``  — ``settings``: the values in force and where each came from

Layer rule (tests/test_layers.py): cube/ imports neither ``cli`` nor ``server``; ``server``
does not import ``cli``; ``cli`` may use both (``serve`` starts the HTTP server).
"""
