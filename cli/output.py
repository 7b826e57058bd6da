"""Where ``statcube`` writes, and what it says when writing fails.

- stderr: a rich console for progress bars, notes and one-line errors (``soft_wrap`` keeps a
  long error on one line in logs; markup in messages is escaped, so a message quoting
  ``[[release]]`` prints as written);
- stdout: data only, written as bytes (:func:`write`), so the CSV is exactly the bytes the
  core's writer produced — the same as the HTTP API's.

Two failures are ordinary, not bugs, and get no traceback: a reader that closes the pipe
early (``statcube aggregate … | head -1``: :func:`silence_stdout`, then exit quietly), and a
full disk (:func:`disk_full` recognises it however the library that hit it wrapped it).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cube.errors import StatcubeError

console = Console(stderr=True, soft_wrap=True)
#: Exit status after the reader closed stdout: that of a process ended by SIGPIPE (128 + 13),
#: what a shell pipeline expects of a producer that was cut off.
EXIT_BROKEN_PIPE = 141
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def progress_bar(title: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar that long-running cube/ functions report to (drawn only on a
    terminal)."""
    with Progress(
        TextColumn(f"[bold]{escape(title)}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=escape(what), completed=done, total=total)

        yield report


def note(text: str) -> None:
    """One plain line on stderr (what a command did or answers for)."""
    console.print(text, markup=False, highlight=False)


def fail(text: str) -> None:
    """One error line on stderr."""
    console.print("[red]error:[/red] " + escape(text), highlight=False)


def write(chunks: Iterable[bytes]) -> None:
    """Data to stdout, as bytes, flushed (so a closed pipe is noticed here, not at exit).

    Loops on short writes: when the reader exits while a large write is blocked, the write
    returns the bytes it got through instead of raising, and the rest would be dropped
    silently; writing the rest raises BrokenPipeError as it should."""
    try:
        sys.stdout.flush()
        out = sys.stdout.buffer
        for chunk in chunks:
            view = memoryview(chunk)
            while view:  # a write cut short by a reader that went away returns a short count
                written = out.write(view)
                if not written:  # a non-blocking stdout that is full: never spin on it
                    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), "<stdout>")
                view = view[written:]
        out.flush()
    except OSError as exc:
        if disk_full(exc) and not isinstance(exc, BrokenPipeError):
            raise StdoutFullError from exc
        raise


class StdoutFullError(Exception):
    """The disk under a redirected stdout (``> file``) filled up: unlike the files statcube
    writes itself, that file is the shell's, and what reached it is incomplete."""

    line = ("no space left on device writing standard output: what was written is "
            "incomplete; free some space and run the command again")


def write_text(text: str) -> None:
    write([text.encode("utf-8")])


def silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so the interpreter's final flush of
    whatever is still buffered does not raise again (the recipe of the Python docs, 'Note
    on SIGPIPE'). SIGPIPE itself stays ignored, as Python sets it: restoring the default
    action would also let a client that hangs up kill ``statcube serve``."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is 'no space left on device' — an OSError from
    Python, or a message from pyarrow or DuckDB, which wrap it in their own types."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        if any(os.strerror(code) in str(seen) for code in _DISK_FULL):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_line(exc: BaseException) -> str:
    where = getattr(exc, "filename", None)
    return ("no space left on device" + (f" writing {where}" if where else "") +
            ": nothing half-written is visible (output is written to a temporary name and "
            "renamed when complete); free some space and run the same command again")


def error_line(exc: StatcubeError) -> str:
    """An error as the CLI prints it: the message, the offending value when the message does
    not already quote it, and the "did you mean" hint — the same fields the API's JSON error
    body carries. Further lines (an input file's bad rows) follow unchanged."""
    first, *rest = str(exc).split("\n")
    if exc.value is not None and not re.search(rf"(?<![\w.]){re.escape(exc.value)}(?![\w.])",
                                               first):
        first += f" ({exc.parameter}: {exc.value!r})" if exc.parameter else f" ({exc.value!r})"
    if exc.hint:
        first += f"; {exc.hint}"
    return "\n".join([first, *rest])
