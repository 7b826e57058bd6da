"""The argument parser of ``statcube``: usage mistakes as one line, with suggestions.

argparse's own errors print the whole usage block and, for an unknown subcommand, the list
of every choice. Here a usage mistake raises :class:`UsageError` — one line that names the
command, the option and the value, with a "did you mean" where a close name exists — and
:func:`cli.main.main` prints it and exits with status 2, like every other user mistake.

:func:`command` is the only way subcommands are added: it requires one example, shown at
the end of the subcommand's ``--help`` (a test walks the parser to check that every option
has help text and every subcommand an example).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from cube.errors import suggest


class UsageError(Exception):
    """A mistake on the command line itself; ``str()`` is the one line to print."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: {message} (see '{prog} --help')")
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`UsageError` (one line, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required: COMMAND"):
            message = "name a command: " + ", ".join(commands(self))
        raise UsageError(self.prog, message)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """An invalid choice names the value and suggests close ones (argparse lists them
        all, which for subcommands is a screenful)."""
        if action.choices is None or value in action.choices:
            return
        names = [str(c) for c in action.choices]
        hint = suggest(str(value), names) or "choose from " + ", ".join(names)
        if isinstance(action, argparse._SubParsersAction):
            raise argparse.ArgumentError(None, f"unknown command {value!r}; {hint}")
        raise argparse.ArgumentError(action, f"invalid choice {value!r}; {hint}")


def commands(parser: argparse.ArgumentParser) -> list[str]:
    """The subcommand names of ``parser`` (empty when it has none)."""
    return sorted(str(name) for name in subcommands(parser))


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unrecognised(parser: argparse.ArgumentParser, extra: Sequence[str]) -> UsageError:
    """The error for arguments no option took, with the closest option names."""
    options = [s for a in parser._actions for s in a.option_strings]
    hints = []
    for token in extra:
        if token.startswith("-"):
            close = suggest(token.split("=", 1)[0], options)
            if close:
                hints.append(f"{token}: {close}")
    text = "unrecognised argument(s): " + " ".join(repr(t) for t in extra)
    return UsageError(parser.prog, text + ("; " + "; ".join(hints) if hints else ""))


def nonempty(text: str) -> str:
    """An option value that must say something: ``--warehouse ""`` is a mistake (it used to
    fall through silently to the default warehouse)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def command(sub: Any, name: str, *, help: str, example: str,
            description: str | None = None) -> Parser:
    """Add subcommand ``name``; its ``--help`` ends with ``example``."""
    p: Parser = sub.add_parser(
        name, help=help, allow_abbrev=False,
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    return p
