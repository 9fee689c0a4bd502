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
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from models.exceptions import CrossrouteError
from router.settings import redact_url
from streams.devstack import DevStack, ServiceStatus
from streams.events import export_json_schemas, json_schemas
from streams.exceptions import ConfigurationError
from streams.settings import WorkerSettings

if TYPE_CHECKING:
    import redis

    from models.embedder import Embedder
    from router.index import VectorIndex

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
models_app = typer.Typer(
    help=(
        "Model bundles: frozen encoders exported to ONNX with a manifest (sha256 of every file, "
        "preprocessing, library versions) and the embedding space id derived from them."
    ),
    no_args_is_help=True,
)
bench_app = typer.Typer(help="Benchmarks that write JSON reports.", no_args_is_help=True)
pairs_app = typer.Typer(
    help="Training pairs: audit and clean them before training.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(pairs_app, name="pairs")
index_app = typer.Typer(
    help=(
        "Redis vector indexes, one per embedding space (named after its space id), and the `live` "
        "alias the API and the router read through."
    ),
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")
topics_app = typer.Typer(
    help="Kafka topics, declared with explicit configs (entity topics compacted).",
    no_args_is_help=True,
)
app.add_typer(topics_app, name="topics")


@app.command("publish")
def publish_cmd(
    kind: Annotated[
        str, typer.Argument(help="products | articles | policies | media | tickets | feedback")
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
    import time

    from confluent_kafka.admin import AdminClient

    from streams.producer import Publisher, read_events
    from streams.topics import ensure_topics, topic_specs

    settings = _worker_settings()
    version = source_version if source_version is not None else int(time.time() * 1000)
    events = list(
        read_events(kind, file, version=version, delete=delete, inline_images=inline_images)
    )
    stack = DevStack(settings.stack, settings.kafka, settings.redis)
    ensure_topics(AdminClient(stack.kafka_config()), topic_specs(settings.topics))
    publisher = Publisher(stack.kafka_config(), settings.topics)
    with _progress(f"publishing {len(events)} {kind}") as progress:

        def tick(sent: int) -> None:
            if sent % 100 == 0 or sent == len(events):
                progress(f"sent {sent}/{len(events)}")

        report = publisher.publish(events, tick)
    for key, error in report.failed[:20]:
        _err.print(f"[red]failed[/red] {key}: {error}")
    _out.print(f"{report.delivered} delivered, {len(report.failed)} failed")
    if report.failed:
        raise typer.Exit(EXIT_FAILURE)


@app.command("worker")
def worker_cmd(
    model: ModelOpt = None,
    loglevel: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """The main job: bring up the embedded dev stack if it is not running (and no external Kafka/
    Redis is configured), build the default model bundle if missing, declare the topics, create the
    index of the bundle's space (and point `live` at it if no index serves yet), then consume:
    entity events → embedded and indexed, tickets → routed, bad events → dead letters."""

    from confluent_kafka.admin import AdminClient

    from router.documents import Indexer
    from router.exceptions import IndexNotFoundError
    from router.index import VectorIndex
    from router.routing import Router
    from streams.logs import setup_logging
    from streams.pipeline import Pipeline, WorkerMetrics
    from streams.topics import COMPACTED_ROLES, ensure_topics, topic_specs
    from streams.worker import build_app

    settings = _worker_settings()
    setup_logging(loglevel, settings.worker.log_format)
    stack = DevStack(settings.stack, settings.kafka, settings.redis)
    stack.up()  # starts what is not running; only checks external services
    bundle = _bundle_dir(model)
    if model is None and not (bundle / "manifest.json").is_file():
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigurationError(
                f"no model bundle in {bundle}, and this install cannot build one (no torch): "
                "run `crossroute models build --out DIR` where the [train] extras are installed "
                "and point CROSSROUTE_MODEL__BUNDLE_DIR at DIR"
            )
        from models.config import load_spec
        from models.export.build import build_bundle

        _err.print(f"building the default model bundle into {bundle}")
        build_bundle(load_spec("default"), bundle)
    embedder = _embedder(model)
    ensure_topics(AdminClient(stack.kafka_config()), topic_specs(settings.topics))
    client = _redis_client(settings)
    index = VectorIndex.for_manifest(client, embedder.manifest, settings.index)
    index.create()
    try:
        VectorIndex.open(client, settings.index.alias, settings.index)
    except IndexNotFoundError:
        index.promote()
    media_root = settings.worker.media_root
    router = Router(embedder, index, settings.routing, media_root=media_root)
    metrics = WorkerMetrics()
    if settings.worker.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker.metrics_port, "127.0.0.1", registry=metrics.registry)
    pipeline = Pipeline(
        Indexer(embedder, index, media_root=media_root), router, stack.kafka_config(),
        settings.topics, settings.worker, metrics,
    )  # fmt: skip
    t = settings.topics
    app_ = build_app(
        pipeline,
        broker_options=settings.kafka.as_faust(stack.kafka_bootstrap()),
        group_id=settings.worker.group_id,
        entity_topics=[t.name(r) for r in (*COMPACTED_ROLES, "media")],
        ticket_topic=t.name("tickets"),
        batch_size=settings.worker.batch_size,
        batch_window_s=settings.worker.batch_window_s,
        datadir=settings.stack.state_dir / "faust" / settings.worker.group_id,
        session_timeout_s=settings.worker.session_timeout_s,
    )
    _err.print(
        f"worker {settings.worker.group_id}: space {embedder.space_id}, index {index.name}, "
        f"topics {t.prefix}*"
    )
    import faust

    # faust keeps our logging setup (text or JSON) instead of installing its own handlers
    faust.Worker(
        app_, loglevel=loglevel, quiet=True, override_logging=False, redirect_stdouts=False
    ).execute_from_commandline()


@app.command("demo")
def demo_cmd(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the worker (bundle, indexing, decisions).")
    ] = 900.0,
    model: ModelOpt = None,
) -> None:
    """Publish a small synthetic shop (articles, warranty policies, products with drawn photos) and
    five tickets (text, an error screenshot, a product photo, one the shop cannot answer), wait for
    a running `crossroute worker` to index and route them, and print the routing decisions."""
    import time
    import uuid

    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from models.bundle import load_manifest
    from router.index import VectorIndex
    from streams.demo import TENANT, demo_world
    from streams.events import RoutingDecided, decode_event
    from streams.producer import Publisher
    from streams.topics import ensure_topics, topic_specs

    settings = _worker_settings()
    if settings.worker.tenants and TENANT not in settings.worker.tenants:
        raise ConfigurationError(
            f"the worker serves only tenants {list(settings.worker.tenants)}: it would dead-letter "
            f"the demo's tenant {TENANT!r}; add it to CROSSROUTE_WORKER__TENANTS or unset that"
        )
    stack = DevStack(settings.stack, settings.kafka, settings.redis)
    deadline = time.monotonic() + timeout
    bundle = _bundle_dir(model)
    if not (bundle / "manifest.json").is_file():  # a first worker run builds it: wait
        with _progress(f"waiting for the worker to build the model bundle in {bundle}"):
            while not (bundle / "manifest.json").is_file():
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"no model bundle in {bundle} after {timeout:.0f}s: is `crossroute "
                        "worker` running (it builds the default bundle on its first start)?"
                    )
                time.sleep(2)
    manifest = load_manifest(bundle, verify=False)
    world = demo_world(int(time.time() * 1000))
    ensure_topics(AdminClient(stack.kafka_config()), topic_specs(settings.topics))
    publisher = Publisher(stack.kafka_config(), settings.topics)
    report = publisher.publish(world.catalog)
    if report.failed:
        raise ConfigurationError(f"publishing the demo catalog failed: {report.failed[0][1]}")
    index = VectorIndex.for_manifest(_redis_client(settings), manifest, settings.index)
    with _progress(f"waiting for the worker to index {len(world.catalog)} documents") as progress:
        while not (index.exists() and index.count(TENANT) >= len(world.catalog)):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the demo catalog was not indexed within {timeout:.0f}s: is `crossroute "
                    f"worker` running with the same settings (index {index.name})?"
                )
            time.sleep(1)
        progress(f"{len(world.catalog)} documents searchable in {index.name}")
    topic = settings.topics.name("decisions")
    consumer = Consumer(stack.kafka_config(**{"group.id": f"demo-{uuid.uuid4().hex[:8]}"}))
    parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in parts]  # fmt: skip
    consumer.assign(ends)
    publisher.publish(world.tickets)
    decisions: dict[str, RoutingDecided] = {}
    wanted = {t.ticket.id for t in world.tickets}
    try:
        with _progress("waiting for the routing decisions") as progress:
            while wanted - set(decisions) and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None or msg.error() is not None or msg.value() is None:
                    continue
                event = decode_event(msg.value() or b"")
                if isinstance(event, RoutingDecided) and event.decision.tenant == TENANT:
                    decisions[event.decision.ticket_id] = event
                    progress(f"{len(decisions)}/{len(wanted)} decisions")
    finally:
        consumer.close()
    from rich.table import Column

    def whole(name: str) -> Column:  # ids stay whole; the ticket text and the evidence wrap
        return Column(name, no_wrap=True)

    table = Table(
        whole("ticket"), "text", whole("queue"), whole("top target"), whole("score"), "evidence",
        whole("expected"),
    )  # fmt: skip
    for t in world.tickets:
        got = decisions.get(t.ticket.id)
        text = (t.ticket.text or "")[:48] + (" [+screenshot]" if t.ticket.screenshot else "")
        text += " [+photo]" if t.ticket.photo else ""
        want = world.expected[t.ticket.id] or "human queue"
        if got is None:
            table.add_row(t.ticket.id, text, "-", "(no decision)", "", "", want)
            continue
        d = got.decision
        top = d.targets[0] if d.targets else None
        reached = "human queue" if d.abstained else (top.doc_id if top else "-")
        mark = "✓" if reached == want else "✗"
        table.add_row(
            t.ticket.id, text, d.queue, top.doc_id if top else "-",
            f"{top.score:.3f}" if top else "", ",".join(top.evidence) if top else "",
            f"{want} {mark}",
        )  # fmt: skip
    _out.print(table)
    _out.print(
        f"space {manifest.space_id}; threshold {next(iter(decisions.values())).decision.threshold:.3f}"
        if decisions
        else ""
    )
    if wanted - set(decisions):
        raise ConfigurationError(
            f"no decision for {sorted(wanted - set(decisions))} within {timeout:.0f}s: is "
            "`crossroute worker` running?"
        )


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the declared topics that are missing (names, partitions, cleanup policy from
    CROSSROUTE_TOPICS__*) and check the existing ones against the declaration."""
    from confluent_kafka.admin import AdminClient

    from streams.topics import ensure_topics, topic_specs

    settings = _worker_settings()
    stack = DevStack(settings.stack, settings.kafka, settings.redis)
    specs = topic_specs(settings.topics)
    report = ensure_topics(AdminClient(stack.kafka_config()), specs)
    table = Table("topic", "partitions", "config", "state")
    for spec in specs:
        state = "created" if spec.name in report.created else "ok"
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        table.add_row(spec.name, str(spec.partitions), config, state)
    _out.print(table)


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


BundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--bundle",
        help="Bundle folder (default: CROSSROUTE_MODEL__BUNDLE_DIR or the built default).",
    ),
]


def _bundle_dir(explicit: Path | None) -> Path:
    return explicit if explicit is not None else _worker_settings().model.resolved_bundle_dir()


def _embedder(explicit: Path | None, threads: int | None = None) -> Embedder:
    """Load a bundle with the providers/threads of CROSSROUTE_MODEL__* (``threads`` overrides)."""
    from models.embedder import Embedder

    model = _worker_settings().model
    directory = explicit if explicit is not None else model.resolved_bundle_dir()
    return Embedder.load(directory, providers=model.providers, threads=threads or model.threads)


def _redis_client(settings: WorkerSettings) -> redis.Redis:
    """A client of the configured Redis (REDIS_URL / CROSSROUTE_REDIS__URL, else the dev stack's)."""
    import redis

    url = DevStack(settings.stack, settings.kafka, settings.redis).redis_url()
    client = redis.Redis.from_url(url, socket_timeout=settings.redis.socket_timeout_s)
    try:
        client.ping()
    except redis.RedisError as e:
        raise ConfigurationError(
            f"cannot reach Redis at {redact_url(url)} ({type(e).__name__}): start the dev stack "
            "with `crossroute stack up` or set REDIS_URL"
        ) from e
    return client


@models_app.command("build")
def models_build(
    config: Annotated[
        str, typer.Option(help="Packaged config name (models/configs/NAME.json) or a JSON file.")
    ] = "default",
    out: Annotated[
        Path | None, typer.Option(help="Bundle folder to write (replaced atomically).")
    ] = None,
    int8_text: Annotated[
        bool,
        typer.Option(
            "--int8-text",
            help="Quantise the text encoder to per-channel int8 (fidelity is measured and recorded).",
        ),
    ] = False,
) -> None:
    """Export the encoders of CONFIG from locally installed pretrained weights to ONNX (dynamic
    batch; dynamic sequence for text), add tokenizer and OCR models, and write manifest.json with the
    space id. Two builds from the same inputs are byte-identical. Needs crossroute[train]."""
    from models.config import load_spec
    from models.export.build import build_bundle

    spec = load_spec(config)
    if int8_text:
        spec = spec.model_copy(update={"text": spec.text.model_copy(update={"int8": True})})
    target = out if out is not None else _worker_settings().model.resolved_bundle_dir()
    with _progress(f"building bundle {spec.name}") as progress:
        manifest = build_bundle(spec, target, progress=progress)
    _out.print(
        f"built {target}\nspace id: {manifest.space_id} (dim {manifest.dim}, {manifest.metric})"
    )
    if manifest.text.quantization:
        q = manifest.text.quantization
        _out.print(
            f"int8 text encoder: cosine vs fp32 min {q['fidelity_cosine_vs_fp32_min']}, "
            f"mean {q['fidelity_cosine_vs_fp32_mean']} on {q['fidelity_texts']} texts"
        )


@models_app.command("verify")
def models_verify(bundle: BundleOpt = None) -> None:
    """Check every file of a bundle against its manifest (sha256) and the space id against them.
    Exits 1 on a tampered or partial bundle."""
    from models.bundle import load_manifest

    target = _bundle_dir(bundle)
    manifest = load_manifest(target, verify=True)
    _out.print(f"ok: {target} space {manifest.space_id}, {len(manifest.files)} files verified")


@models_app.command("info")
def models_info(
    bundle: BundleOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest.")] = False,
) -> None:
    """Describe a bundle: space id, encoders, dims, preprocessing, files."""
    from models.bundle import load_manifest

    manifest = load_manifest(_bundle_dir(bundle), verify=False)
    if as_json:
        _out.print_json(manifest.model_dump_json())
        return
    spec = manifest.spec
    _out.print(
        f"space id  {manifest.space_id}  ({manifest.dim}-d {manifest.dtype}, {manifest.metric})"
    )
    text, image = manifest.text, manifest.image
    max_len = spec.text.preprocess.max_length
    lexical = spec.text.preprocess.lexical
    words = f", + {lexical.dim}-bin hashed words" if lexical is not None else ""
    _out.print(
        f"text      {spec.text.name} → {text.onnx} ({text.dim}-d, max {max_len} tokens{words})"
    )
    pre = spec.image.preprocess
    extras = [f"{pre.size}px", f"crop {pre.crop}"]
    if pre.stages and image.stages_dim:
        extras.append(f"+ {image.stages_dim}-d stage features")
    if pre.colour is not None:
        extras.append(f"+ {pre.colour.dim}-bin colour histogram")
    _out.print(f"image     {spec.image.name} → {image.onnx} ({image.dim}-d, {', '.join(extras)})")
    _out.print(f"ocr       {spec.ocr.name if spec.ocr else '-'}")
    _out.print(f"head      {spec.head.method}")
    _out.print(
        f"files     {len(manifest.files)}, {sum(f.bytes for f in manifest.files.values()) / 1e6:.1f} MB"
    )


@bench_app.command("encoders")
def bench_encoders_cmd(
    bundle: BundleOpt = None,
    data: Annotated[
        Path,
        typer.Option(help="A dataset root in the eval layout (texts and images are read from it)."),
    ] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="JSON report to write.")] = Path("bench/encoders.json"),
    seconds: Annotated[float, typer.Option(help="Minimum seconds per measured point.")] = 3.0,
    threads: Annotated[
        int | None, typer.Option(help="Threads for onnxruntime and torch (default: all cores).")
    ] = None,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Skip the torch reference.")] = False,
) -> None:
    """Texts/s and images/s at batch 1 and 32: ONNX serving path vs the torch reference."""
    from models.bench import bench_encoders

    texts, images = _bench_inputs(data)
    embedder = _embedder(bundle, threads)
    with _progress("benchmarking encoders"):
        report = bench_encoders(
            embedder,
            texts,
            images,
            min_seconds=seconds,
            torch_reference=not no_torch,
            threads=threads,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["results"]:
        what = f"{row['modality']:5} {row['engine']:11} {row['stage']:26} batch {row['batch']:>2}"
        _out.print(f"{what}: {row['items_per_s']:>8.1f}/s")
    _out.print(f"onnx/torch: {report['onnx_over_torch']}  → {out}")


@pairs_app.command("audit")
def pairs_audit(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder holding pairs.jsonl and images/.")
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Bundle whose image encoder judges visual grounding."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    filter_out: Annotated[
        Path | None,
        typer.Option(
            "--filter",
            help="Write the cleaned pairs (and dropped.jsonl with reasons) into this folder.",
        ),
    ] = None,
    min_slice_pairs: Annotated[
        int, typer.Option(help="Slices with fewer pairs are reported as thin.")
    ] = 20,
) -> None:
    """Duplicates and near-duplicates, group consistency, coverage per slice, broken pairs, and words
    that are poorly grounded visually (brand/campaign words spanning unrelated categories)."""
    from models.train.audit import audit_pairs, write_filtered

    embedder = _embedder(model)
    with _progress(f"auditing {dataset}") as progress:
        report, drops = audit_pairs(
            dataset, embedder, min_slice_pairs=min_slice_pairs, progress=progress
        )
    _out.print(
        f"{report['dataset']}: {report['pairs']} pairs, {report['groups']} groups; "
        f"drop {report['dropped']} {report['dropped_by_reason']}"
    )
    _out.print(
        f"near-duplicate images {report['near_duplicate_images']}, images in several groups "
        f"{report['images_in_several_groups']}, titles in several groups {report['titles_in_several_groups']}"
    )
    thin = report["coverage"]["thin_head_nouns"]
    _out.print(
        f"thin slices (< {min_slice_pairs} pairs): {len(thin)} head nouns, e.g. {list(thin)[:8]}"
    )
    worst = ", ".join(
        f"{t['token']} ({t['visual_coherence']:+.3f}, {t['count']})"
        for t in report["poorly_grounded_tokens"][:10]
    )
    _out.print(f"poorly grounded words (visual coherence, count): {worst or 'none'}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    if filter_out is not None:
        kept, dropped = write_filtered(dataset, filter_out, drops)
        _out.print(
            f"wrote {kept} pairs to {filter_out / 'pairs.jsonl'}, {dropped} to dropped.jsonl"
        )


@app.command("train")
def train_cmd(
    pairs: Annotated[
        list[Path],
        typer.Argument(help="Dataset folders whose pairs.jsonl to train on (text, image, group)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    method: Annotated[
        str,
        typer.Option(
            help="naive (no training) | linear (closed-form ridge) | inbatch (contrastive) "
            "| mined (contrastive + mined negatives).",
        ),
    ] = "inbatch",
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Bundle whose encoders to reuse (default: the current one)."),
    ] = None,
    support: Annotated[
        list[Path] | None,
        typer.Option(
            "--support", help="Support datasets whose articles give text↔text pairs (repeatable)."
        ),
    ] = None,
    image_crop: Annotated[
        str,
        typer.Option(
            "--image-crop",
            help="pad: letterbox the whole image (default; catalogue shots are tall) | center: "
            "the encoder's centre crop.",
        ),
    ] = "pad",
    colour: Annotated[
        bool,
        typer.Option(
            "--colour/--no-colour",
            help="Append a colour histogram to the image features (trained methods).",
        ),
    ] = True,
    stages: Annotated[
        bool,
        typer.Option(
            "--stages/--no-stages",
            help="Append the image encoder's pooled intermediate-stage features (textures, "
            "patterns) to the image features (trained methods; needs a timm base bundle).",
        ),
    ] = True,
    lexical: Annotated[
        bool,
        typer.Option(
            "--lexical/--no-lexical",
            help="Append hashed words (brands, colours, product types) to the text features "
            "(inbatch and mined).",
        ),
    ] = True,
    edits: Annotated[
        bool,
        typer.Option(
            "--edits/--no-edits",
            help="mined: also train against one-word edits of each photo's own text ('Navy' for "
            "'Black'), the substitutions learnt from minimal pairs in the pair texts.",
        ),
    ] = True,
) -> None:
    """Fit the alignment head on curated pairs and write a bundle that reuses the base bundle's
    encoders. Seeded and deterministic on CPU: the same inputs give the same weights and space id."""
    from models.train.run import train_bundle

    if method not in ("naive", "linear", "inbatch", "mined"):
        raise ConfigurationError(
            f"--method must be naive, linear, inbatch or mined, not {method!r}"
        )
    if image_crop not in ("pad", "center"):
        raise ConfigurationError(f"--image-crop must be pad or center, not {image_crop!r}")
    settings = _worker_settings()
    base_dir = base if base is not None else settings.model.resolved_bundle_dir()
    with _progress(f"training ({method})") as progress:

        def epochs(stage: str, epoch: int, total: int) -> None:
            if epoch == total or epoch % 5 == 0:
                progress(f"{stage}: epoch {epoch}/{total}")

        manifest = train_bundle(
            base_dir, pairs, out, method=method,  # type: ignore[arg-type]
            support_folders=support or [], cache_dir=settings.stack.cache_dir / "features",
            progress=progress, epoch_progress=epochs,
            image_crop=image_crop, colour=colour, stages=stages,  # type: ignore[arg-type]
            lexical=lexical, edits=edits,
        )  # fmt: skip
    _out.print(f"wrote {out}\nspace id: {manifest.space_id} (head {method}, {manifest.dim}-d)")


@app.command("eval")
def eval_cmd(
    dataset: Annotated[
        Path,
        typer.Argument(help="Dataset folder: corpus.jsonl, queries.jsonl, qrels.tsv, images/."),
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help="Model bundle (default: the current one).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    k: Annotated[
        str, typer.Option("--k", help="Comma-separated cut-offs for recall@K.")
    ] = "1,5,10",
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare", help="A second bundle: print per-slice deltas, flag slices that got worse."
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Abstain threshold for out-of-scope scoring (default: fit on the dataset, reported as such)."
        ),
    ] = None,
    index: Annotated[
        str,
        typer.Option(
            "--index",
            help="exact: brute-force cosine in memory | redis: through a temporary index in the "
            "real Redis (HNSW, serving parameters), reporting HNSW recall vs exact.",
        ),
    ] = "exact",
    exemplars: Annotated[
        Path | None,
        typer.Option(
            "--exemplars",
            help="A labelled dataset folder (e.g. the public split) whose queries become exemplars: "
            "past tickets that vote for the document they were resolved with.",
        ),
    ] = None,
    exemplars_cv: Annotated[
        int,
        typer.Option(
            "--exemplars-cv",
            help="K > 1: measure exemplar routing by K-fold cross-validation on DATASET's own "
            "labelled queries (each fold ranked with the other folds as exemplars).",
        ),
    ] = 0,
) -> None:
    """Evaluate a bundle on a dataset folder (../shared/docs/EVAL.md): recall@K, MRR@10, nDCG@10,
    out-of-scope precision/recall/F1, per-slice metrics, query-embedding latency."""
    from models.eval.dataset import load_dataset
    from models.eval.report import compare_reports, render_html
    from models.eval.run import evaluate

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError as e:
        raise ConfigurationError(f"--k must be comma-separated integers, got {k!r}") from e
    if not ks or ks[0] < 1:
        raise ConfigurationError(f"--k must list positive integers, got {k!r}")
    if index not in ("exact", "redis"):
        raise ConfigurationError(f"--index must be exact or redis, not {index!r}")
    if exemplars is not None and exemplars_cv:
        raise ConfigurationError("give --exemplars or --exemplars-cv, not both")
    data = load_dataset(dataset)
    embedder = _embedder(model)
    from models.eval.run import exemplar_pairs

    options: dict[str, Any] = {
        "ks": ks,
        "threshold": threshold,
        "exemplars": exemplar_pairs(load_dataset(exemplars)) if exemplars else (),
        "exemplar_folds": exemplars_cv,
    }

    def run(emb: Embedder, progress: Callable[[str], None]) -> dict[str, Any]:
        if index == "exact":
            return evaluate(data, emb, progress=progress, **options)
        from router.evaluate import evaluate_on_redis

        settings = _worker_settings()
        return evaluate_on_redis(
            data, emb, _redis_client(settings), settings.index, progress=progress, **options
        )

    with _progress(f"evaluating {embedder.space_id} on {data.name}") as progress:
        result = run(embedder, progress)
        other = comparison = None
        if compare is not None:
            other = run(_embedder(compare), progress)
            comparison = compare_reports(result, other)
    if comparison is not None:
        result["comparison"] = comparison
    _print_eval(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_html(result, comparison, other))


def _print_eval(result: dict[str, object]) -> None:
    metrics = result["metrics"]
    assert isinstance(metrics, dict)  # noqa: S101  # the report's shape
    _out.print(f"{result['dataset']}  space {result['model']['space_id']}  "  # type: ignore[index]
               f"queries {result['n_queries']}  corpus {result['n_corpus']}")  # fmt: skip
    _out.print("  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    hnsw = result.get("hnsw")
    if isinstance(hnsw, dict):
        _out.print(
            f"retrieval: {result['retrieval']}; recall@10 vs exact {hnsw['recall@10_vs_exact']}"
        )
    oos = result.get("out_of_scope")
    if isinstance(oos, dict):
        _out.print(
            f"out of scope: threshold {oos['threshold']:.4f} ({oos['threshold_source']}) "
            f"P {oos['precision']:.3f} R {oos['recall']:.3f} F1 {oos['f1']:.3f}"
        )
    comparison = result.get("comparison")
    if isinstance(comparison, dict):
        deltas = "  ".join(f"{n} {d:+.4f}" for n, d in comparison["metrics"].items())
        _out.print(f"vs {comparison['old']}: {deltas}")
        for key, values in comparison["slices"].items():
            for value, m in values.items():
                flag = "  [red]WORSE[/red]" if m.get("recall@10", 0) < -0.01 else ""
                _out.print(
                    f"  {key}={value} (n={m['n']}): recall@10 {m.get('recall@10', 0):+.4f}{flag}"
                )


# -- index, calibration, routing, API ---------------------------------------------------------------


def _index_for(settings: WorkerSettings, embedder: Embedder, name: str | None) -> VectorIndex:
    """The index of the embedder's space (``name`` unset) or the named index/alias."""
    from router.exceptions import IndexNotFoundError
    from router.index import VectorIndex

    client = _redis_client(settings)
    if name is not None:
        return VectorIndex.open(client, name, settings.index)
    index = VectorIndex.for_manifest(client, embedder.manifest, settings.index)
    if not index.exists():
        raise IndexNotFoundError(
            f"no index for space {embedder.space_id}: create it with `crossroute index create` "
            "(or load data with `crossroute index load`)"
        )
    return index


ModelOpt = Annotated[
    Path | None, typer.Option("--model", help="Model bundle (default: the current one).")
]
_INDEX_OPT = typer.Option(
    "--index",
    help="Index or alias to serve from (default: the `live` alias, CROSSROUTE_INDEX__ALIAS).",
)


@index_app.command("create")
def index_create(
    model: ModelOpt = None,
    promote: Annotated[bool, typer.Option(help="Point the `live` alias at it.")] = False,
) -> None:
    """Create the index of a bundle's embedding space (schema from the manifest; idempotent)."""
    from router.index import VectorIndex

    settings = _worker_settings()
    embedder = _embedder(model)
    index = VectorIndex.for_manifest(_redis_client(settings), embedder.manifest, settings.index)
    created = index.create()
    _out.print(
        f"{'created' if created else 'exists:'} {index.name} ({embedder.dim}-d, cosine, HNSW)"
    )
    if promote:
        _print_promotion(index)


def _print_promotion(index: VectorIndex) -> None:
    previous = index.promote()
    _out.print(f"{index.alias_name()} → {index.name}" + (f" (was {previous})" if previous else ""))


@index_app.command("load")
def index_load(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder (EVAL.md layout) whose corpus.jsonl to index.")
    ],
    tenant: Annotated[str, typer.Option(help="Tenant that owns the documents.")] = "default",
    model: ModelOpt = None,
    promote: Annotated[bool, typer.Option(help="Point the `live` alias at the index.")] = False,
    version: Annotated[int, typer.Option(help="Source version written with every document.")] = 1,
    exemplars: Annotated[
        bool,
        typer.Option(
            "--exemplars",
            help="Also index the dataset's labelled text queries as exemplars (resolved tickets "
            "that vote for their article).",
        ),
    ] = False,
) -> None:
    """Index a dataset's corpus (articles, warranty policies, products with images) for a tenant."""
    from models.eval.dataset import load_dataset
    from router.documents import Indexer
    from router.index import VectorIndex

    settings = _worker_settings()
    embedder = _embedder(model)
    data = load_dataset(dataset)
    index = VectorIndex.for_manifest(_redis_client(settings), embedder.manifest, settings.index)
    index.create()
    indexer = Indexer(embedder, index, media_root=data.root)
    entities = [_corpus_entity(doc, tenant) for doc in data.corpus]
    if exemplars:
        from models.eval.run import exemplar_pairs
        from router.schemas import Exemplar

        entities += [
            Exemplar(id=f"ex-{i}", tenant=tenant, text=text, target_id=_entity_id(doc))
            for i, (text, doc) in enumerate(exemplar_pairs(data))
        ]
    written = duplicates = stale = failed = 0
    with _progress(f"indexing {len(entities)} documents of {data.name}") as progress:
        for start in range(0, len(entities), 64):
            chunk = entities[start : start + 64]
            outcome = indexer.upsert(chunk, [version] * len(chunk))
            written += outcome.result.written
            duplicates += outcome.result.duplicates
            stale += outcome.result.stale
            for _, err in outcome.failed:
                failed += 1
                _err.print(f"[yellow]skipped[/yellow] {err}")
            progress(f"indexed {start + len(chunk)}/{len(entities)}")
    _out.print(
        f"{index.name}: {written} written, {duplicates} unchanged, {stale} stale, {failed} failed; "
        f"{index.count(tenant)} documents for tenant {tenant}"
    )
    if promote:
        _print_promotion(index)
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def _entity_id(corpus_id: str) -> str:
    return corpus_id.replace(" ", "_")[:128]


def _corpus_entity(doc: Any, tenant: str) -> Any:
    """A corpus row of the EVAL.md layout as the domain document it stands for."""
    from router.schemas import Article, ImageRef, Product, WarrantyPolicy

    ident = _entity_id(doc.id)
    title = (doc.title or doc.text or doc.id).strip()[:1000] or doc.id
    category = doc.attrs.get("article_type") or doc.attrs.get("label") or doc.attrs.get("topic")
    if doc.kind == "warranty_policy":
        return WarrantyPolicy(id=ident, tenant=tenant, title=title, body=doc.text or "")
    if doc.kind == "article" and not doc.image:
        return Article(id=ident, tenant=tenant, title=title, body=doc.text or "", category=category)
    image = ImageRef(uri=doc.image) if doc.image else None
    return Product(
        id=ident, tenant=tenant, title=title, description=doc.text or "" if doc.title else "",
        category=category or "uncategorised", image=image,
    )  # fmt: skip


@index_app.command("promote")
def index_promote(
    model: ModelOpt = None,
) -> None:
    """Point the `live` alias at the index of a bundle's space (blue/green flip; rerun with the
    previous bundle to roll back)."""
    settings = _worker_settings()
    embedder = _embedder(model)
    _print_promotion(_index_for(settings, embedder, None))


@index_app.command("info")
def index_info(
    name: Annotated[str | None, typer.Argument(help="Index or alias (default: `live`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The space, document count and indexing failures of an index or alias."""
    from router.index import VectorIndex

    settings = _worker_settings()
    index = VectorIndex.open(_redis_client(settings), name or settings.index.alias, settings.index)
    info = {
        "index": index.name,
        "space_id": index.space_id,
        "dim": index.space.dim,
        "documents": index.count(),
        "hash_indexing_failures": index.indexing_failures(),
    }
    if as_json:
        _out.print_json(json.dumps(info))
    else:
        for key, value in info.items():
            _out.print(f"{key:24s} {value}")


@index_app.command("drop")
def index_drop(
    model: ModelOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Drop the index of a bundle's space with its documents."""
    settings = _worker_settings()
    index = _index_for(settings, _embedder(model), None)
    if not yes and not typer.confirm(f"drop {index.name} and its {index.count()} documents?"):
        raise typer.Exit(EXIT_FAILURE)
    index.drop()
    _out.print(f"dropped {index.name}")


@app.command("calibrate")
def calibrate_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="Labelled dataset folder with out-of-scope queries (EVAL.md).")
    ],
    model: ModelOpt = None,
) -> None:
    """Fit the abstain threshold of a bundle's space (out-of-scope F1 optimum on DATASET) and store
    it as {space_id}.json, where the router and the API pick it up for that space only."""
    from datetime import UTC, datetime

    from models.eval.dataset import load_dataset
    from models.eval.run import evaluate
    from router.routing import Calibration, calibration_dir, save_calibration

    settings = _worker_settings()
    data = load_dataset(dataset)
    if data.n_out_of_scope == 0:
        raise ConfigurationError(
            f"{data.name} has no out-of-scope queries (queries without qrels): cannot fit an "
            "abstain threshold on it"
        )
    embedder = _embedder(model)
    with _progress(f"calibrating {embedder.space_id} on {data.name}") as progress:
        report = evaluate(data, embedder, latency_sample=0, progress=progress)
    oos = report["out_of_scope"]
    cal = Calibration(
        space_id=embedder.space_id, threshold=oos["threshold"], dataset=data.name,
        dataset_digest=report["dataset_digest"], precision=oos["precision"],
        recall=oos["recall"], f1=oos["f1"], n_queries=report["n_queries"],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    path = save_calibration(calibration_dir(settings.routing), cal)
    _out.print(
        f"threshold {cal.threshold:.4f} (out-of-scope P {cal.precision:.3f} R {cal.recall:.3f} "
        f"F1 {cal.f1:.3f} on {data.name}) → {path}"
    )


def _router(settings: WorkerSettings, model: Path | None, index_name: str | None) -> Any:
    from router.routing import Router

    embedder = _embedder(model)
    index = _index_for(settings, embedder, index_name or settings.index.alias)
    return Router(embedder, index, settings.routing)


@app.command("route")
def route_cmd(
    text: Annotated[str, typer.Option("--text", help="The ticket's text.")] = "",
    photo: Annotated[Path | None, typer.Option("--photo", "--image", help="A photo file.")] = None,
    screenshot: Annotated[
        Path | None, typer.Option(help="A screenshot file (OCR + image).")
    ] = None,
    tenant: Annotated[str, typer.Option(help="Tenant of the ticket.")] = "default",
    locale: Annotated[str, typer.Option(help="Locale of the ticket.")] = "en",
    category: Annotated[str | None, typer.Option(help="Product category of the ticket.")] = None,
    k: Annotated[int | None, typer.Option(help="Targets to return.")] = None,
    model: ModelOpt = None,
    index: Annotated[str | None, _INDEX_OPT] = None,
) -> None:
    """Route one ticket from the terminal and print the decision as JSON."""
    from router.schemas import Ticket

    settings = _worker_settings()
    try:
        ticket = Ticket(
            id="cli", tenant=tenant, locale=locale, text=text, product_category=category,
        )  # fmt: skip
    except ValidationError as e:
        raise ConfigurationError(f"invalid ticket: {e.errors(include_url=False)[0]['msg']}") from e
    from models.preprocess import read_image_bytes

    limits = _embedder_limits(model)
    photo_bytes = read_image_bytes(photo, limits, str(photo)) if photo else None
    shot_bytes = read_image_bytes(screenshot, limits, str(screenshot)) if screenshot else None
    if not text.strip() and photo_bytes is None and shot_bytes is None:
        raise ConfigurationError("give --text, --photo or --screenshot")
    router = _router(settings, model, index)
    decision = router.route(ticket, photo=photo_bytes, screenshot=shot_bytes, k=k)
    _out.print_json(decision.model_dump_json())


def _embedder_limits(model: Path | None) -> Any:
    from models.bundle import load_manifest

    return load_manifest(_bundle_dir(model), verify=False).spec.image.preprocess.limits


@app.command("api")
def api_cmd(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default CROSSROUTE_API__HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CROSSROUTE_API__PORT).")] = None,
    model: ModelOpt = None,
    index: Annotated[str | None, _INDEX_OPT] = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs and /openapi.json): /v1/route, /v1/search, /healthz,
    /metrics. Loopback by default."""
    import uvicorn

    from router.api import create_app

    settings = _worker_settings()
    router = _router(settings, model, index)
    app_ = create_app(router, settings.api)
    info = router.describe()
    _err.print(
        f"serving space {info['space_id']} from {info['index']}, threshold {info['threshold']:.3f} "
        f"({info['threshold_source']}) on http://{host or settings.api.host}:{port or settings.api.port}"
    )
    uvicorn.run(
        app_, host=host or settings.api.host, port=port or settings.api.port, log_level="info",
        access_log=False,
    )  # fmt: skip


def _bench_inputs(data: Path) -> tuple[list[str], list[Path]]:
    if not data.is_dir():
        raise ConfigurationError(f"--data {data} is not a folder")
    texts: list[str] = []
    images: list[Path] = []
    for queries in sorted(data.glob("*/queries.jsonl")):
        for line in queries.read_text().splitlines()[:64]:
            row = json.loads(line)
            if row.get("text"):
                texts.append(row["text"])
            if row.get("image"):
                images.append(queries.parent / row["image"])
    if not texts or not images:
        raise ConfigurationError(f"--data {data} holds no queries with texts and images")
    return texts[:256], images[:64]


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
