"""What every command needs before it starts: settings, the model, and — for the query
commands — the release it answers for.

The release comes from the same calendar and the same embargo rule as the HTTP server
(:func:`cube.releases.open_releases` over :meth:`Settings.release_calendar`): without
``--release`` a command answers for the latest *published* release, seeing only its
periods, exactly as a guest of the API would. ``--release`` may name any release of the
calendar, also one still under embargo — whoever runs the CLI can read the warehouse file
anyway, as the API's prerelease and admin roles may — and the line on stderr then says
so in capitals.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cube.model import Model
from cube.releases import LONDON, Release, ReleaseSet, format_period, open_releases
from cube.settings import Settings
from cube.workspace import CubeBrowser


def settings_of(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the environment, with the global ``--model``/``--data-dir`` options and
    a command's own options (``overrides``; None means not given) on top."""
    return Settings.from_env(model=getattr(args, "model", None),
                             data_dir=getattr(args, "data_dir", None), **overrides)


def model_path(settings: Settings) -> Path:
    """The model file in force: the setting, else the packaged model.json when the default
    name is not in the working directory (the same rule as the server)."""
    from cube.model import default_model_path

    path = Path(settings.model)
    if not path.exists() and settings.model == "model.json":
        path = default_model_path()
    return path


def model_of(settings: Settings) -> Model:
    from cube.model import load_model

    return load_model(model_path(settings))


@dataclass
class Answer:
    """The release a query command answers for, over its open warehouse(s)."""

    releases: ReleaseSet
    release: Release
    now: datetime
    calendar: str | None

    def browser(self, cube: str) -> CubeBrowser:
        return self.releases.browser(self.release, cube)

    def line(self, period: str | None = None) -> str:
        """One line for stderr: which release, published when, and which period."""
        r = self.release
        at = f"{r.published.astimezone(LONDON):%Y-%m-%d %H:%M} London time"
        if self.calendar is None:
            when = "the warehouse's own release; no release calendar"
        elif r.is_published(self.now):
            when = f"published {at}; calendar {self.calendar}"
        else:
            when = f"UNDER EMBARGO until {at}; calendar {self.calendar}"
        what = f"period {period}" if period else f"data to {format_period(r.last_period)}"
        return f"answer: release {r.id} ({when}), {what}"


@contextmanager
def answering(args: argparse.Namespace) -> Iterator[Answer]:
    """Open the release calendar in force and pick the release (see the module docstring)."""
    settings = settings_of(args, warehouse=args.warehouse, releases=args.releases)
    releases = open_releases(settings, model_of(settings))
    try:
        now = settings.now()
        release = releases.calendar.select(args.release, now,
                                           embargo_exempt=bool(args.prerelease))
        yield Answer(releases, release, now, settings.release_calendar())
    finally:
        releases.close()
