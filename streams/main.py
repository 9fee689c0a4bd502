"""The ``crossroute`` command: the commands of the three packages, assembled.

Each package owns its commands (:mod:`models.cli`, :mod:`router.cli`, :mod:`streams.cli`); this entry
module only merges them, one help panel per package, and runs the result through
:func:`models.clikit.run_app` (one ``error:`` line and exit code 2 for usage errors, 1 for others).
It lives in ``streams`` because ``streams`` is the one package allowed to import the other two.
"""

from __future__ import annotations

import typer

from models import cli as models_cli
from models.clikit import run_app
from models.eval.backends import register_evaluator
from router import cli as router_cli
from streams import cli as streams_cli

__all__ = ["app", "main"]

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
app.add_typer(streams_cli.app)
app.add_typer(router_cli.app)
app.add_typer(models_cli.app)
register_evaluator("redis", router_cli.redis_evaluator)  # crossroute eval --index redis


def main() -> None:
    """Console entry point (``crossroute``)."""
    run_app(app)


if __name__ == "__main__":  # pragma: no cover
    main()
