"""``crossroute`` commands of the streaming layer: the dev stack, topics, publishing, the worker.

Each command parses its flags, reads :class:`~streams.settings.WorkerSettings` once, calls the
function of this package that does the work and prints what it returned. The entry module
(:mod:`streams.main`) merges :data:`app` into ``crossroute`` under the "Streams" panel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from models.cli import bench_app
from models.clikit import (
    EXIT_FAILURE,
    ModelOpt,
    err,
    group,
    load_embedder,
    out,
    progress,
    read_settings,
)
from router.cli import IndexOpt
from streams.devstack import DevStack, ServiceStatus
from streams.events import export_json_schemas, json_schemas
from streams.producer import KINDS
from streams.settings import WorkerSettings

if TYPE_CHECKING:
    from models.embedder import Embedder
    from models.progress import Progress
    from streams.supervisor import ServiceState

__all__ = ["PANEL", "app"]

PANEL = "Streams: dev stack, Kafka, the worker"

app: typer.Typer = typer.Typer()
stack_app = group(
    app,
    "stack",
    PANEL,
    "The embedded dev stack: a real Apache Kafka 4 broker (KRaft) and a real Redis Stack 7.4 "
    "server, on 127.0.0.1, with data, logs and PIDs under CROSSROUTE_STACK__STATE_DIR.",
)
schemas_app = group(app, "schemas", PANEL, "JSON Schemas of the wire events.")
topics_app = group(
    app, "topics", PANEL, "Kafka topics, declared with explicit configs (entity topics compacted)."
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the statuses as JSON.")]


# -- up, down, status: the deployment ----------------------------------------------------------


@app.command("up", rich_help_panel=PANEL)
def up_cmd(
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds the worker, then the API, may take to become ready (the worker's first "
            "start builds the default model bundle)."
        ),
    ] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """The main job in one command: start what the deployment needs and is not running — the dev
    stack when no external Kafka/Redis is configured, the worker, the API — each in the background
    with its PID and log under CROSSROUTE_STACK__STATE_DIR/services, and wait until each is ready.
    `crossroute down` stops exactly what this started."""
    from streams import supervisor

    settings = read_settings(WorkerSettings)
    with progress("starting the deployment") as step:
        states = supervisor.up(settings, progress=step, timeout_s=timeout)
    _print_states(states, as_json, settings.stack.state_dir)
    if not as_json:
        api = settings.api
        err.print(f"web console: http://{api.host}:{api.port}/console/ (a key: crossroute keys "
                  "create --tenant T --scope admin)")  # fmt: skip


@app.command("down", rich_help_panel=PANEL)
def down_cmd() -> None:
    """Stop what `crossroute up` started (the API, the worker, and the dev stack's servers only if
    `up` started them), matched by PID and start time, never by process name."""
    from streams import supervisor

    stopped = supervisor.down(read_settings(WorkerSettings))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")


@app.command("status", rich_help_panel=PANEL)
def status_cmd(as_json: JsonOpt = False) -> None:
    """The processes `crossroute up` supervises: running or stopped, PID, endpoint, log. Exits 1 if
    the worker or the API is not running."""
    from streams import supervisor

    settings = read_settings(WorkerSettings)
    states = supervisor.status(settings)
    _print_states(states, as_json, settings.stack.state_dir)
    if any(s.state == "stopped" for s in states):
        raise typer.Exit(EXIT_FAILURE)


def _print_states(states: list[ServiceState], as_json: bool, state_dir: Path) -> None:
    """One row per service; logs relative to the state dir, which the caption names."""
    if as_json:
        out.print_json(json.dumps([s.as_dict() for s in states]))
        return
    table = Table(box=None, pad_edge=False, caption=f"logs under {state_dir}")
    for col in ("service", "state", "pid"):
        table.add_column(col, no_wrap=True)
    table.add_column("endpoint", overflow="fold")
    table.add_column("log", overflow="fold")
    for s in states:
        log = "-"
        if s.log_file is not None:
            log = str(
                s.log_file.relative_to(state_dir)
                if s.log_file.is_relative_to(state_dir)
                else s.log_file
            )
        table.add_row(s.name, s.state, str(s.pid or "-"), s.endpoint, log)
    out.print(table)


# -- stack ---------------------------------------------------------------------------------------


@stack_app.command("install")
def stack_install() -> None:
    """Fetch what the embedded services need, once: Kafka jars (Maven) and OpenSSL 1.1 for Redis."""
    settings = read_settings(WorkerSettings)
    with progress("installing the dev stack") as step:
        DevStack.from_settings(settings, progress=step).install()
    out.print(f"dev stack installed (cache: {settings.stack.cache_dir})")


@stack_app.command("up")
def stack_up(as_json: JsonOpt = False) -> None:
    """Start Kafka and Redis Stack on 127.0.0.1 (installing them first if needed) and wait until
    both are healthy. Services given by KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are only checked."""
    settings = read_settings(WorkerSettings)
    with progress("starting the dev stack") as step:
        statuses = DevStack.from_settings(settings, progress=step).up()
    _print_statuses(statuses, as_json)


@stack_app.command("status")
def stack_status(as_json: JsonOpt = False) -> None:
    """Report each service healthy or not, with its endpoint. Exits 1 if any is unhealthy."""
    statuses = DevStack.from_settings(read_settings(WorkerSettings)).status()
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
    stopped = DevStack.from_settings(read_settings(WorkerSettings)).down(purge=purge)
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("compose-secrets")
def stack_compose_secrets(
    folder: Annotated[
        Path, typer.Option("--dir", help="Where docker-compose.yml reads its secrets from.")
    ] = Path("stack/secrets"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing secrets (new passwords).")
    ] = False,
) -> None:
    """Make the users, passwords and certificates docker-compose.yml runs with (Redis ACL users,
    Kafka SCRAM users and TLS, the worker's, API's, admin's and publisher's env files) in a 0700
    folder; prints the file names, never a secret. Redis users are confined to
    CROSSROUTE_INDEX__NAMESPACE."""
    from streams.devstack.compose import write_compose_secrets

    settings = read_settings(WorkerSettings)
    written = write_compose_secrets(
        folder, namespace=settings.index.namespace, alias=settings.index.alias, force=force
    )
    for path in written:
        out.print(str(path), highlight=False)
    err.print(f"{len(written)} files in {folder} (mode 0700); next: docker compose up -d --build")


def _print_statuses(statuses: list[ServiceStatus], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps([s.as_dict() for s in statuses]))
        return
    table = Table(box=None, pad_edge=False)
    for col in ("service", "mode", "endpoint", "health", "pid"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for s in statuses:
        health = "[green]healthy[/green]" if s.healthy else "[red]unhealthy[/red]"
        table.add_row(s.name, s.mode, s.endpoint, health, str(s.pid or "-"), s.detail)
    out.print(table)


# -- schemas, topics -----------------------------------------------------------------------------


@schemas_app.command("export")
def schemas_export(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write the *.schema.json files into.")
    ] = Path("docs/schemas"),
    check: Annotated[
        bool, typer.Option("--check", help="Only compare with the files in OUT; exit 1 if stale.")
    ] = False,
) -> None:
    """Write one JSON Schema per event type (and the union) for producers in other languages."""
    if check:
        stale = [
            name
            for name, schema in sorted(json_schemas().items())
            if not (out_dir / name).exists()
            or (out_dir / name).read_text() != json.dumps(schema, indent=2, sort_keys=True) + "\n"
        ]
        if stale:
            err.print(f"error: stale schemas in {out_dir}: {', '.join(stale)}")
            raise typer.Exit(EXIT_FAILURE)
        out.print(f"schemas in {out_dir} are up to date")
        return
    paths = export_json_schemas(out_dir)
    out.print(f"wrote {len(paths)} schemas to {out_dir}")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the declared topics that are missing (names, partitions, cleanup policy from
    CROSSROUTE_TOPICS__*) and check the existing ones against the declaration."""
    from confluent_kafka.admin import AdminClient

    from streams.connections import kafka_config
    from streams.topics import ensure_topics, topic_specs

    settings = read_settings(WorkerSettings)
    specs = topic_specs(settings.topics)
    report = ensure_topics(AdminClient(kafka_config(settings)), specs)
    table = Table("topic", "partitions", "config", "state")
    for spec in specs:
        state = "created" if spec.name in report.created else "ok"
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        table.add_row(spec.name, str(spec.partitions), config, state)
    out.print(table)


@topics_app.command("acl")
def topics_acl(
    user: Annotated[str, typer.Argument(help="The SASL user the ACLs are for.")],
    role: Annotated[
        str, typer.Option(help="worker (consume, produce, create its topics) or publisher.")
    ] = "worker",
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Create them through the configured (admin) connection."),
    ] = False,
) -> None:
    """The least-privilege Kafka ACLs of a role, scoped to CROSSROUTE_TOPICS__PREFIX and
    CROSSROUTE_WORKER__GROUP_ID, for clusters that authorize requests (StandardAuthorizer)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from models.exceptions import UsageError
    from streams.acls import ACL_ROLES, acl_bindings, apply_acls, describe_acls
    from streams.connections import kafka_config

    if role not in ACL_ROLES:
        raise UsageError(f"unknown role {role!r}: choose from {', '.join(ACL_ROLES)}")
    settings = read_settings(WorkerSettings)
    try:
        bindings = acl_bindings(user, role, settings.topics.prefix, settings.worker.group_id,
                                settings.topics.name("dead_letters"))  # fmt: skip
    except ValueError as e:
        raise UsageError(str(e)) from e
    for line in describe_acls(user, role, settings.topics.prefix, settings.worker.group_id,
                              settings.topics.name("dead_letters")):  # fmt: skip
        out.print(line, highlight=False)
    if apply:
        try:
            apply_acls(AdminClient(kafka_config(settings)), bindings)
        except KafkaException as e:
            raise UsageError(f"cannot create the ACLs: {e}") from e
        err.print(f"created {len(bindings)} ACLs for User:{user}")


# -- publish, worker, demo -----------------------------------------------------------------------


@app.command("publish", rich_help_panel=PANEL)
def publish_cmd(
    kind: Annotated[
        str,
        typer.Argument(help=" | ".join(KINDS) + " (policies: an alias of warranty_policies)"),
    ],
    file: Annotated[Path, typer.Argument(help="JSONL file: one document per line.")],
    source_version: Annotated[
        int | None,
        typer.Option(
            "--source-version",
            help="Version for lines without their own source_version (default: now in ms).",
        ),
    ] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help='Lines are {"tenant", "id"}: publish deletions.')
    ] = False,
    inline_images: Annotated[
        bool,
        typer.Option(
            "--inline-images",
            help="Read image paths (relative to FILE) and send the bytes inside the events.",
        ),
    ] = False,
) -> None:
    """Publish documents as events (idempotent producer, keyed tenant/id, acks=all); exits 1 if any
    delivery failed. Creates the topics first if they are missing."""
    from confluent_kafka.admin import AdminClient

    from streams.connections import kafka_config
    from streams.producer import Publisher, read_events
    from streams.topics import ensure_topics, topic_specs

    settings = read_settings(WorkerSettings)
    version = source_version if source_version is not None else int(time.time() * 1000)
    events = list(
        read_events(kind, file, version=version, delete=delete, inline_images=inline_images)
    )
    ensure_topics(AdminClient(kafka_config(settings)), topic_specs(settings.topics))
    publisher = Publisher(kafka_config(settings), settings.topics)
    with progress(f"publishing {len(events)} {kind}") as step:

        def tick(sent: int) -> None:
            if sent % 100 == 0 or sent == len(events):
                step(f"sent {sent}/{len(events)}")

        report = publisher.publish(events, tick)
    for key, error in report.failed[:20]:
        err.print(f"[red]failed[/red] {key}: {error}")
    out.print(f"{report.delivered} delivered, {len(report.failed)} failed")
    if report.failed:
        raise typer.Exit(EXIT_FAILURE)


@app.command("api", rich_help_panel=PANEL)
def api_cmd(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default CROSSROUTE_API__HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CROSSROUTE_API__PORT).")] = None,
    model: ModelOpt = None,
    index: IndexOpt = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve without API keys: any caller can act for any tenant. Local development "
            "only (CROSSROUTE_API__AUTH=off does the same).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs and /openapi.json): /v1/route, /v1/search, the human
    queue, /healthz, /metrics, and the web console at /console/ (same keys). Loopback by default.
    Every call but /healthz needs an API key (`crossroute keys create`), sent as `Authorization:
    Bearer <key>`. Answers to the human queue are published to the feedback topic. Without
    --model/--index it serves the deployment (the live space, and the canary's share of tickets)
    and follows `crossroute promote`/`rollback` without a restart; with either, that one space
    only."""
    from fastapi import FastAPI

    from router.cli import serve_api
    from router.deploy import Deployments
    from router.gate import GateRecords
    from router.index import VectorIndex
    from router.settings import RouterSettings
    from streams.answers import KafkaAnswers
    from streams.connections import kafka_config, redis_client
    from streams.operations import DeadLetters, MetricsHistory, add_operations, spaces_overview

    settings = read_settings(WorkerSettings)

    def operations(app_: FastAPI) -> None:
        client = redis_client(settings.redis, settings.stack)
        deployments = Deployments(client, settings.index)
        history = MetricsHistory(settings.worker.scrape_url())
        history.start()
        letters = DeadLetters(kafka_config(settings), settings.topics.name("dead_letters"))
        gates = GateRecords(client, settings.index.namespace)
        reports = settings.model.reports_dir
        add_operations(app_, history, letters, lambda detail: spaces_overview(
            deployments, lambda name: VectorIndex.open(client, name, settings.index), gates,
            reports, detail=detail), reports)  # fmt: skip

    serve_api(
        read_settings(RouterSettings),
        host=host,
        port=port,
        model=model,
        index=index,
        no_auth=no_auth,
        feedback=KafkaAnswers(kafka_config(settings), settings.topics),
        extend=operations,
    )


@app.command("worker", rich_help_panel=PANEL)
def worker_cmd(
    model: ModelOpt = None,
    loglevel: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """The main job: bring up the embedded dev stack if it is not running (and no external Kafka/
    Redis is configured), build the default model bundle if missing, declare the topics, create the
    index of the bundle's space (and point `live` at it if no index serves yet), then consume:
    entity events → embedded and indexed, tickets → routed, bad events → dead letters."""
    from streams.worker import run

    run(read_settings(WorkerSettings), model=model, loglevel=loglevel, announce=err.print)


@app.command("reindex", rich_help_panel=PANEL)
def reindex_cmd(
    model: Annotated[
        Path,
        typer.Option(
            "--model", help="The new bundle: every vector of its index is computed by it."
        ),
    ],
    until_caught_up: Annotated[
        bool,
        typer.Option(
            "--until-caught-up",
            help="Stop once every partition is read to its end (default: "
            "keep following the topics, so the new index never falls behind).",
        ),
    ] = False,
    from_scratch: Annotated[
        bool,
        typer.Option(
            "--from-scratch",
            help="Drop the new space's index and start from the first offsets "
            "(refused for a space that serves: live or canary).",
        ),
    ] = False,
) -> None:
    """Build the index of a new bundle's space by replaying the compacted entity topics (then the
    feedback topic) from the beginning, through the worker's pipeline, in its own consumer group,
    while the live worker keeps serving. Prints documents indexed and lag per partition, says when
    it has caught up, then keeps following (Ctrl-C stops after the chunk in progress)."""
    import signal
    import threading

    from streams.logs import setup_logging
    from streams.reindex import reindex

    settings = read_settings(WorkerSettings)
    setup_logging("warning", settings.worker.log_format)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    report = reindex(
        settings, model, until_caught_up=until_caught_up, from_scratch=from_scratch,
        announce=err.print, stop=stop,
    )  # fmt: skip
    out.print(
        f"{report.index}: {report.documents} documents ({report.indexed} indexed, "
        f"{report.deleted} deleted, {report.dead_lettered} bad events) from {report.events} events"
    )


@app.command("gate", rich_help_panel=PANEL)
def gate_cmd(
    candidate: Annotated[
        Path, typer.Option("--candidate", help="Bundle of the new space (its index must exist).")
    ],
    baseline: Annotated[
        Path, typer.Option("--baseline", help="Bundle of the space it would replace (live).")
    ],
    eval_: Annotated[
        list[Path],
        typer.Option(
            "--eval",
            help="Eval dataset folder (EVAL.md layout) whose corpus the tenant's "
            "documents hold; repeat for several.",
        ),
    ],
    tenant: Annotated[str, typer.Option(help="Tenant whose documents are judged.")] = "default",
    candidate_index: Annotated[
        str | None, typer.Option(help="Candidate index name (default: its space's index).")
    ] = None,
    baseline_index: Annotated[
        str | None, typer.Option(help="Baseline index name (default: its space's index).")
    ] = None,
    topics: Annotated[
        bool,
        typer.Option(
            help="Compare the candidate's documents with the live entities of the compacted "
            "topics (--no-topics: skip, e.g. an index loaded from a dataset)."
        ),
    ] = True,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the report as HTML.")
    ] = None,
) -> None:
    """Go / no-go for a candidate space against the live one: versioning (manifest verified,
    index of one space, documents = live entities of the topics), eval coverage, retrieval per
    slice on the real indexes (no slice worse than CROSSROUTE_GATE__TOLERANCE), routing p95
    against a budget, and canary outcome rates once both spaces have enough decisions. Exit 0 go,
    1 no-go, 2 bad input; changes nothing that serves."""
    from models.eval.dataset import load_dataset
    from models.exceptions import BundleError, SpaceMismatchError, UsageError
    from router.exceptions import IndexNotFoundError
    from router.gate import GateRecords, run_gate
    from router.index import VectorIndex
    from router.outcomes import Outcomes
    from router.routing import Router
    from streams.census import topic_census
    from streams.connections import redis_client

    settings = read_settings(WorkerSettings)
    datasets = [load_dataset(path) for path in eval_]
    for data in datasets:
        if not data.qrels:
            raise UsageError(f"eval dataset {data.root} has no in-scope queries: nothing to judge")
    client = redis_client(settings.redis, settings.stack)

    def router(bundle: Path, index_name: str | None) -> Router:
        embedder = load_embedder(settings.model, bundle)  # verifies every file
        if index_name is None:
            index = VectorIndex.for_manifest(client, embedder.manifest, settings.index)
            index_name = index.name
        index = VectorIndex.open(client, index_name, settings.index)
        return Router(embedder, index, settings.routing)  # refuses an index of another space

    try:  # a bundle that fails verification, an index missing or of another space: bad input
        cand, base = router(candidate, candidate_index), router(baseline, baseline_index)
    except (BundleError, SpaceMismatchError, IndexNotFoundError) as e:
        raise UsageError(str(e)) from e
    if cand.space_id == base.space_id:
        raise UsageError(f"candidate and baseline are one space ({cand.space_id})")
    outcomes = Outcomes(client, settings.index.namespace)
    with progress(f"gating {cand.space_id} against {base.space_id}") as step:
        census = None
        if topics:
            step("reading the compacted entity topics")
            census = topic_census(settings)
        result = run_gate(
            cand, base, datasets, tenant=tenant, settings=settings.gate, topic_documents=census,
            outcomes=(outcomes.counts(cand.space_id), outcomes.counts(base.space_id)),
            progress=step,
        )  # fmt: skip
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if report is not None:
        report.write_text(result.to_html())
    GateRecords(client, settings.index.namespace).record(result)  # the console's models page
    for check in result.checks:
        colour = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "dim"}[check.status]
        out.print(f"[{colour}]{check.status:4s}[/{colour}] {check.name}")
        for reason in check.reasons:
            out.print(f"     {reason}", soft_wrap=True)
    out.print(
        f"[bold]{'GO' if result.go else 'NO-GO'}[/bold]: {result.candidate} against "
        f"{result.baseline}"
    )
    if not result.go:
        raise typer.Exit(EXIT_FAILURE)


@app.command("demo", rich_help_panel=PANEL)
def demo_cmd(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the worker (bundle, indexing, decisions).")
    ] = 900.0,
    model: ModelOpt = None,
) -> None:
    """Publish a small synthetic shop (articles, warranty policies, products with drawn photos) and
    seven tickets (text, an error screenshot, product photos, ones the shop cannot answer), wait for
    a running `crossroute worker` to index and route them, and print the routing decisions. Exits 1
    if any ticket is not routed where the demo expects it."""
    from streams.demo import decisions_table, run_demo
    from streams.exceptions import ConfigurationError

    settings = read_settings(WorkerSettings)
    with progress("running the demo") as step:
        result = run_demo(settings, timeout=timeout, model=model, progress=step)
    out.print(decisions_table(result))
    if result.decisions:
        threshold = next(iter(result.decisions.values())).decision.threshold
        out.print(f"space {result.space_id}; threshold {threshold:.3f}")
    if result.missing:
        raise ConfigurationError(
            f"no decision for {result.missing} within {timeout:.0f}s: is `crossroute worker` running?"
        )
    if result.wrong:
        err.print(
            f"[red]error:[/red] {len(result.wrong)} of {len(result.decisions)} tickets routed "
            f"elsewhere than expected: {', '.join(result.wrong)}",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILURE)


# -- bench ingest | scale | all ------------------------------------------------------------------


DataOpt = Annotated[
    Path,
    typer.Option(help="The shared data root (catalog photos, articles and policies are read)."),
]
QuickOpt = Annotated[bool, typer.Option("--quick", help="A smaller run (under 5 minutes here).")]


@contextmanager
def _bench_run(
    model: Path | None, title: str
) -> Iterator[tuple[WorkerSettings, Embedder, Path, Progress]]:
    """What a Kafka bench needs: the settings, the bundle, the dev stack up (unless external
    services are configured), a scratch folder for the workers' logs, and a progress line."""
    import tempfile

    from streams.connections import start_dev_stack

    settings = read_settings(WorkerSettings)
    embedder = load_embedder(settings.model, model)
    start_dev_stack(settings)
    with tempfile.TemporaryDirectory(prefix="crossroute-bench-") as tmp, progress(title) as step:
        yield settings, embedder, Path(tmp), step


@bench_app.command("ingest")
def bench_ingest_cmd(
    data: DataOpt = Path("../shared/data"),
    model: ModelOpt = None,
    quick: QuickOpt = False,
    no_peer: Annotated[
        bool,
        typer.Option("--no-peer", help="Skip the naive peer (it needs crossroute[train,bench])."),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="JSON report (default bench/ingest.json; --quick bench/ingest-quick.json).",
        ),
    ] = None,
) -> None:
    """Ingest measured end to end in a deployment of its own (topics, index, consumer group, a real
    worker process): events/s from first publish to searchable for product events (title + photo)
    and article/policy events, divided by the encoders' own rate on the same documents
    (efficiency); the naive peer (confluent-kafka loop, torch per message, redisvl writes) on the
    same events; freshness (event time → searchable) at 50% and 90% of the measured capacity;
    where the time goes."""
    from models.bench import write_bench
    from streams.bench import FULL_INGEST, QUICK_INGEST, bench_ingest

    with _bench_run(model, "benchmarking ingest") as (settings, embedder, tmp, step):
        report = bench_ingest(
            settings, embedder, data, QUICK_INGEST if quick else FULL_INGEST, tmp,
            peer=not no_peer, progress=step,
        )  # fmt: skip
    path = write_bench("ingest", embedder, quick, json_out, report)
    for kind in ("image", "text"):
        r = report[kind]
        peer = f", {r['vs_naive_peer']}x the naive peer" if "vs_naive_peer" in r else ""
        out.print(
            f"{kind:5}: {r['events_per_s']:.1f} events/s, encoders alone {r['encoder_docs_per_s']:.1f}"
            f"/s: efficiency {r['efficiency']:.2f}{peer}"
        )
    for row in report["freshness"]:
        out.print(
            f"freshness at {row['load']:.0%} ({row['events_per_s']} events/s): p50 {row['p50']} ms, "
            f"p95 {row['p95']} ms, p99 {row['p99']} ms ({row['seen']}/{row['events']} seen)"
        )
    out.print(f"→ {path}")


@bench_app.command("scale")
def bench_scale_cmd(
    data: DataOpt = Path("../shared/data"),
    model: ModelOpt = None,
    quick: QuickOpt = False,
    workers: Annotated[str, typer.Option(help="Worker counts, comma-separated.")] = "1,2,4",
    events: Annotated[
        int | None, typer.Option(help="Product events per point (default 1500; --quick 400).")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json", help="JSON report (default bench/scale.json; --quick bench/scale-quick.json)."
        ),
    ] = None,
) -> None:
    """Ingest throughput with 1, 2 and 4 worker processes in one consumer group on a 6-partition
    topic, and the per-worker efficiency (throughput / (workers x the one-worker rate))."""
    from models.bench import write_bench
    from models.exceptions import UsageError
    from streams.bench import bench_scale

    try:
        counts = [int(x) for x in workers.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > 16:
        raise UsageError(f"--workers {workers!r}: give counts from 1 to 16, like 1,2,4")
    with _bench_run(model, "benchmarking scale") as (settings, embedder, tmp, step):
        report = bench_scale(
            settings, embedder, data, events or (400 if quick else 1500), tmp,
            workers=counts, progress=step,
        )  # fmt: skip
    path = write_bench("scale", embedder, quick, json_out, report)
    for row in report["workers"]:
        out.print(
            f"{row['workers']} worker(s): {row['events_per_s']:.1f} events/s, "
            f"per-worker efficiency {row['per_worker_efficiency']:.2f}"
        )
    out.print(f"→ {path}")


@bench_app.command("restart")
def bench_restart_cmd(
    data: DataOpt = Path("../shared/data"),
    model: ModelOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="10,000 vectors instead of 100,000.")
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="JSON report (default bench/restart.json; --quick bench/restart-quick.json).",
        ),
    ] = None,
) -> None:
    """Restart the embedded Redis with an index of 100,000 catalog vectors (default HNSW settings)
    and time until it answers and until RediSearch has rebuilt the index. Clients connected to that
    Redis (a running worker or API) see it go away and reconnect."""
    from models.bench import write_bench
    from models.settings import xdg_dir
    from streams.bench import bench_restart

    with _bench_run(model, "benchmarking a Redis restart") as (settings, embedder, _, step):
        report = bench_restart(
            settings, embedder, data, 10_000 if quick else 100_000, xdg_dir("cache") / "bench",
            progress=step,
        )  # fmt: skip
    path = write_bench("restart", embedder, quick, json_out, report)
    out.print(
        f"{report['documents']} documents: back (PING) after {report['restart_to_ping_s']} s, "
        f"index rebuilt after {report['restart_to_indexed_s']} s → {path}"
    )


@bench_app.command("all")
def bench_all_cmd(
    data: DataOpt = Path("../shared/data"),
    model: ModelOpt = None,
    quick: QuickOpt = False,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json", help="JSON report (default bench/all.json; --quick bench/all-quick.json)."
        ),
    ] = None,
) -> None:
    """Every benchmark in one run (encoders, ingest, route, index, restart, scale), one JSON report with a
    section per benchmark (each section as its own command writes it)."""
    import tempfile

    from models.bench import run_context
    from models.cli import bench_encoders_cmd
    from router.cli import bench_index_cmd, bench_route_cmd

    settings = read_settings(WorkerSettings)
    embedder = load_embedder(settings.model, model)
    path = json_out or Path("bench/all-quick.json" if quick else "bench/all.json")
    full: dict[str, object] = {"bench": "all", **run_context(embedder), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="crossroute-bench-all-") as tmp:
        part = Path(tmp)
        bench_encoders_cmd(
            bundle=model, data=data, out_file=part / "encoders.json",
            seconds=1.0 if quick else 3.0, threads=None, no_torch=False,
        )  # fmt: skip
        full["encoders"] = json.loads((part / "encoders.json").read_text())
        bench_ingest_cmd(
            data=data, model=model, quick=quick, no_peer=False, json_out=part / "i.json"
        )
        full["ingest"] = json.loads((part / "i.json").read_text())["ingest"]
        bench_route_cmd(
            data=data, model=model, quick=quick, requests=None, json_out=part / "r.json"
        )
        full["route"] = json.loads((part / "r.json").read_text())["route"]
        bench_index_cmd(
            data=data, model=model, quick=quick, n=None, defaults_only=False,
            json_out=part / "x.json",
        )  # fmt: skip
        full["index"] = json.loads((part / "x.json").read_text())["index"]
        bench_restart_cmd(data=data, model=model, quick=quick, json_out=part / "rs.json")
        full["restart"] = json.loads((part / "rs.json").read_text())["restart"]
        bench_scale_cmd(
            data=data, model=model, quick=quick, workers="1,2,4", events=None,
            json_out=part / "s.json",
        )  # fmt: skip
        full["scale"] = json.loads((part / "s.json").read_text())["scale"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(full, indent=2) + "\n")
    out.print(f"→ {path}")


if __name__ == "__main__":  # pragma: no cover  # `python -m streams.cli` runs the whole CLI
    from streams.main import main

    main()
