"""The ``crossroute`` command line: one entry point wiring ``streams``, ``router`` and ``models``.

Every command reads its process's settings once, here, and passes explicit objects down. Errors that
crossroute raises on purpose (bad configuration, a port in use, a service down) are printed as one
``error:`` line with a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from models.exceptions import CrossrouteError
from streams.devstack import DevStack, ServiceStatus
from streams.events import export_json_schemas, json_schemas
from streams.exceptions import ConfigurationError
from streams.settings import WorkerSettings

__all__ = ["app", "main"]

EXIT_FAILURE = 1
EXIT_CONFIG = 2

app = typer.Typer(
    name="crossroute",
    help=(
        "Keep a multimodal search index live from Kafka and route support tickets with it.\n\n"
        "Configuration comes from CROSSROUTE_* environment variables (see README); "
        "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL point crossroute at external services."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(
    help=(
        "The embedded dev stack: a real Apache Kafka 4 broker (KRaft) and a real Redis Stack 7.4 "
        "server, on 127.0.0.1, with data, logs and PIDs under CROSSROUTE_STACK__STATE_DIR."
    ),
    no_args_is_help=True,
)
schemas_app = typer.Typer(help="JSON Schemas of the wire events.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")

_err = Console(stderr=True, highlight=False)
_out = Console(highlight=False)


def _worker_settings() -> WorkerSettings:
    try:
        return WorkerSettings()
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(
            f"invalid setting {where}: {first['msg']} (env CROSSROUTE_{where.upper().replace('.', '__')})"
        ) from e


@contextmanager
def _progress(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr; the yielded callback replaces its text and logs the previous step."""
    if not _err.is_terminal:
        yield lambda line: _err.print(f"[dim]… {line}[/dim]")
        return
    with _err.status(message) as status:

        def update(line: str) -> None:
            status.update(line)
            _err.log(line)

        yield update


def _status_table(statuses: list[ServiceStatus]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("service", "mode", "endpoint", "health", "pid"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for s in statuses:
        health = "[green]healthy[/green]" if s.healthy else "[red]unhealthy[/red]"
        table.add_row(s.name, s.mode, s.endpoint, health, str(s.pid or "-"), s.detail)
    return table


@stack_app.command("install")
def stack_install() -> None:
    """Fetch what the embedded services need, once: Kafka jars (Maven) and OpenSSL 1.1 for Redis."""
    settings = _worker_settings()
    with _progress("installing the dev stack") as progress:
        DevStack.from_settings(settings, progress=progress).install()
    _out.print(f"dev stack installed (cache: {settings.stack.cache_dir})")


@stack_app.command("up")
def stack_up(
    as_json: Annotated[bool, typer.Option("--json", help="Print the statuses as JSON.")] = False,
) -> None:
    """Start Kafka and Redis Stack on 127.0.0.1 (installing them first if needed) and wait until
    both are healthy. Services given by KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are only checked."""
    settings = _worker_settings()
    with _progress("starting the dev stack") as progress:
        statuses = DevStack.from_settings(settings, progress=progress).up()
    _print_statuses(statuses, as_json)


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the statuses as JSON.")] = False,
) -> None:
    """Report each service healthy or not, with its endpoint. Exits 1 if any is unhealthy."""
    statuses = DevStack.from_settings(_worker_settings()).status()
    _print_statuses(statuses, as_json)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(EXIT_FAILURE)


@stack_app.command("down")
def stack_down(
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the services' data and logs.")
    ] = False,
) -> None:
    """Stop exactly the processes `stack up` started (matched by PID and start time)."""
    settings = _worker_settings()
    stopped = DevStack.from_settings(settings).down(purge=purge)
    _out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def _print_statuses(statuses: list[ServiceStatus], as_json: bool) -> None:
    if as_json:
        _out.print_json(json.dumps([s.as_dict() for s in statuses]))
    else:
        _out.print(_status_table(statuses))


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Folder to write the *.schema.json files into.")] = Path(
        "docs/schemas"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Only compare with the files in OUT; exit 1 if stale.")
    ] = False,
) -> None:
    """Write one JSON Schema per event type (and the union) for producers in other languages."""
    if check:
        stale = [
            name
            for name, schema in sorted(json_schemas().items())
            if not (out / name).exists()
            or (out / name).read_text() != json.dumps(schema, indent=2, sort_keys=True) + "\n"
        ]
        if stale:
            _err.print(f"error: stale schemas in {out}: {', '.join(stale)}")
            raise typer.Exit(EXIT_FAILURE)
        _out.print(f"schemas in {out} are up to date")
        return
    paths = export_json_schemas(out)
    _out.print(f"wrote {len(paths)} schemas to {out}")


def main() -> None:
    """Console entry point: run the app, turning crossroute errors into one line + exit code.

    Click's standalone mode handles usage errors, ``--help`` and exit codes; anything crossroute
    raises on purpose propagates out of it and is printed here without a traceback.
    """
    try:
        app()
    except CrossrouteError as e:
        _err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(EXIT_CONFIG if isinstance(e, ConfigurationError) else EXIT_FAILURE)


if __name__ == "__main__":  # pragma: no cover
    main()
