"""What every ``crossroute`` command module shares: consoles, exit codes, progress, settings, options.

``models`` is the bottom layer, so the helpers the three command modules (``models.cli``,
``router.cli``, ``streams.cli``) have in common live here, defined once. A command module parses its
flags, reads its process's settings once with :func:`read_settings`, calls a function of its package
that does the work, and prints the result; errors crossroute raises on purpose reach :func:`run_app`
and are printed as one ``error:`` line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from models.exceptions import CrossrouteError, UsageError
from models.progress import Progress
from models.settings import ModelSettings, ProcessSettings

if TYPE_CHECKING:
    from models.embedder import Embedder

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "BundleOpt",
    "ModelOpt",
    "err",
    "group",
    "load_embedder",
    "out",
    "progress",
    "read_settings",
    "run_app",
]

EXIT_FAILURE = 1
"""The command ran and failed (a delivery failed, a service is unhealthy, an error)."""
EXIT_USAGE = 2
"""The command cannot run as given (bad flag, bad setting): :class:`UsageError`."""

S = TypeVar("S", bound=ProcessSettings)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ModelOpt = Annotated[
    Path | None, typer.Option("--model", help="Model bundle (default: the current one).")
]
BundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--bundle",
        help="Bundle folder (default: CROSSROUTE_MODEL__BUNDLE_DIR or the built default).",
    ),
]


def group(parent: typer.Typer, name: str, panel: str, help_text: str) -> typer.Typer:
    """A command group (``crossroute stack …``) of ``parent``, shown in its package's help panel,
    that prints its help when called bare."""
    sub = typer.Typer(help=help_text, no_args_is_help=True)
    parent.add_typer(sub, name=name, rich_help_panel=panel)
    return sub


def read_settings(cls: type[S]) -> S:
    """Read a process's settings from the environment, once, at the command's start.

    Raises:
        UsageError: a value is invalid; the message names the setting and its env name.
    """
    try:
        return cls()
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"invalid setting {where}: {first['msg']} (env CROSSROUTE_{where.upper().replace('.', '__')})"
        ) from e


def load_embedder(
    settings: ModelSettings, explicit: Path | None = None, threads: int | None = None
) -> Embedder:
    """:meth:`Embedder.from_settings`, imported when a command needs it (``--help`` stays fast)."""
    from models.embedder import Embedder

    return Embedder.from_settings(settings, explicit, threads)


@contextmanager
def progress(message: str) -> Iterator[Progress]:
    """A spinner on stderr; the yielded callback replaces its text and logs the previous step.
    Without a terminal, each step is one dimmed line instead."""
    if not err.is_terminal:
        yield lambda line: err.print(f"[dim]… {line}[/dim]")
        return
    with err.status(message) as status:

        def update(line: str) -> None:
            status.update(line)
            err.log(line)

        yield update


def run_app(app: typer.Typer) -> None:
    """Run ``app``, turning crossroute errors into one ``error:`` line and an exit code.

    Click's standalone mode handles usage errors, ``--help`` and exit codes; anything crossroute
    raises on purpose propagates out of it and is printed here without a traceback: exit 2 for a
    :class:`UsageError`, 1 for any other. Anything else is a bug and shows its traceback.
    """
    try:
        app()
    except CrossrouteError as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(EXIT_USAGE if isinstance(e, UsageError) else EXIT_FAILURE)
