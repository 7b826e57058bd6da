"""``statcube``: the parser and ``main``, where every ordinary failure becomes one line.

Exit status: 0 done; 2 a mistake or a refusal — a usage error, any
:class:`~cube.errors.StatcubeError` (bad input, configuration, a missing driver), a full
disk, a file the operating system refuses (no such directory, permission denied: an
OSError that names its file); 130 interrupted; 141 the reader closed stdout
(``… | head``), quietly. Nothing a user can cause prints a stack trace; an unexpected
exception still does, because it is a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli import data, export, pg, query, settings, sql
from cli.output import (
    EXIT_BROKEN_PIPE,
    StdoutFullError,
    disk_full,
    disk_full_line,
    error_line,
    fail,
    note,
    silence_stdout,
)
from cli.parsing import Parser, UsageError, nonempty, subcommands, unrecognised
from cube.errors import StatcubeError

DESCRIPTION = ("statcube: protected benefit statistics — generate or load data, build a "
               "release warehouse, query it, export it, serve it.")


def parser() -> Parser:
    p = Parser(prog="statcube", description=DESCRIPTION, allow_abbrev=False,
               epilog="example:\n  statcube demo",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=nonempty, help="model.json path (env STATCUBE_MODEL)")
    p.add_argument("--data-dir", type=nonempty,
                   help="data directory (env STATCUBE_DATA_DIR, default ./data)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=Parser)
    data.register(sub)
    export.register(sub)
    query.register(sub)
    pg.register(sub)
    settings.register(sub)
    sql.register(sub)
    return p


def _run(argv: Sequence[str] | None) -> int:
    p = parser()
    try:
        args, extra = p.parse_known_args(argv)
        if extra:
            raise unrecognised(subcommands(p).get(args.command, p), extra)
    except UsageError as exc:
        fail(str(exc))
        return 2
    try:
        return int(args.func(args))
    except StatcubeError as exc:
        fail(error_line(exc))
        return 2
    except KeyboardInterrupt:
        note("interrupted: no partial output is visible; rerun the same command to resume "
             "(exports continue from their last finished partition)")
        return 130
    except StdoutFullError as exc:
        fail(exc.line)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:
        if disk_full(exc):
            fail(disk_full_line(exc))
            return 2
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
            fail(f"{exc.strerror}: {exc.filename}")  # a path the user gave or the setup made
            return 2
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``statcube`` with ``argv`` (default: the process's arguments); the exit status."""
    try:
        code = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
