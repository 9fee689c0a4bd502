"""``crossroute`` commands of the routing layer: indexes, routing, calibration, the HTTP API.

Each command parses its flags, reads :class:`~router.settings.RouterSettings` once (the settings
the API process documents), calls the function of this package that does the work and prints what
it returned. Redis is the configured one (``REDIS_URL``), else the dev stack's default endpoint.
The entry module (``streams.main``) merges :data:`app` into ``crossroute`` under the "Router" panel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

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
from models.exceptions import UsageError
from router.connection import redis_client
from router.settings import RouterSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from models.embedder import Embedder
    from models.eval.backends import Evaluator
    from models.eval.dataset import Dataset
    from router.auth import ApiKey, KeyStore
    from router.deploy import Deployment, Deployments
    from router.feedback import FeedbackSink
    from router.index import VectorIndex
    from router.routing import Router

__all__ = ["PANEL", "IndexOpt", "app", "serve_api"]

PANEL = "Router: indexes, routing, HTTP API"

app: typer.Typer = typer.Typer()

index_app = group(
    app,
    "index",
    PANEL,
    "Redis vector indexes, one per embedding space (named after its space id), and the `live` "
    "alias the API and the router read through.",
)

keys_app = group(
    app,
    "keys",
    PANEL,
    "API keys of the HTTP API: each bound to one tenant and scopes (route, search, queue, admin), stored "
    "hashed in Redis; the key itself is printed once, at creation.",
)

IndexOpt = Annotated[
    str | None,
    typer.Option(
        "--index",
        help="Index or alias to serve from (default: the `live` alias, CROSSROUTE_INDEX__ALIAS).",
    ),
]


def _space_index(settings: RouterSettings, embedder: Embedder) -> VectorIndex:
    """The index of the embedder's space (not necessarily created yet)."""
    from router.index import VectorIndex

    return VectorIndex.for_manifest(
        redis_client(settings.redis, settings.stack), embedder.manifest, settings.index
    )


def _existing_index(settings: RouterSettings, embedder: Embedder, name: str | None) -> VectorIndex:
    """The named index or alias, or (``name`` unset) the existing index of the embedder's space."""
    from router.exceptions import IndexNotFoundError
    from router.index import VectorIndex

    if name is not None:
        return VectorIndex.open(redis_client(settings.redis, settings.stack), name, settings.index)
    index = _space_index(settings, embedder)
    if not index.exists():
        raise IndexNotFoundError(
            f"no index for space {embedder.space_id}: create it with `crossroute index create` "
            "(or load data with `crossroute index load`)"
        )
    return index


def _deployments(settings: RouterSettings) -> Deployments:
    from router.deploy import Deployments

    return Deployments(redis_client(settings.redis, settings.stack), settings.index)


def _register(settings: RouterSettings, embedder: Embedder, index: VectorIndex) -> Deployments:
    """Record where the space's bundle and index are, so serving processes can load it."""
    deployments = _deployments(settings)
    deployments.register(embedder.space_id, embedder.bundle_dir, index.name)
    return deployments


def _print_state(state: Deployment) -> None:
    line = f"live {state.live or '-'}"
    if state.canary is not None:
        line += f", canary {state.canary} at {state.canary_percent:g}%"
    line += f", previous {state.previous or '-'} (revision {state.revision}: {state.note})"
    out.print(line)


def _print_promotion(settings: RouterSettings, embedder: Embedder, index: VectorIndex) -> None:
    state = _register(settings, embedder, index).promote(embedder.space_id)
    out.print(f"{index.alias_name()} → {index.name}")
    _print_state(state)


# -- index ---------------------------------------------------------------------------------------


@index_app.command("create")
def index_create(
    model: ModelOpt = None,
    promote: Annotated[bool, typer.Option(help="Point the `live` alias at it.")] = False,
) -> None:
    """Create the index of a bundle's embedding space (schema from the manifest; idempotent)."""
    settings = read_settings(RouterSettings)
    embedder = load_embedder(settings.model, model)
    index = _space_index(settings, embedder)
    created = index.create()
    _register(settings, embedder, index)
    out.print(
        f"{'created' if created else 'exists:'} {index.name} ({embedder.dim}-d, cosine, HNSW)"
    )
    if promote:
        _print_promotion(settings, embedder, index)


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
    from router.loading import index_dataset

    settings = read_settings(RouterSettings)
    embedder = load_embedder(settings.model, model)
    data = load_dataset(dataset)
    index = _space_index(settings, embedder)
    with progress(f"indexing the documents of {data.name}") as step:
        report = index_dataset(
            data, embedder, index, tenant=tenant, version=version, exemplars=exemplars,
            progress=step,
        )  # fmt: skip
    for error in report.failed:
        err.print(f"[yellow]skipped[/yellow] {error}")
    out.print(
        f"{index.name}: {report.written} written, {report.unchanged} unchanged, {report.stale} "
        f"stale, {len(report.failed)} failed; {index.count(tenant)} documents for tenant {tenant}"
    )
    _register(settings, embedder, index)
    if promote:
        _print_promotion(settings, embedder, index)
    if report.failed:
        raise typer.Exit(EXIT_FAILURE)


@index_app.command("promote")
def index_promote(model: ModelOpt = None) -> None:
    """Make a bundle's space live at once (what `crossroute promote --model` does)."""
    settings = read_settings(RouterSettings)
    embedder = load_embedder(settings.model, model)
    _print_promotion(settings, embedder, _existing_index(settings, embedder, None))


@index_app.command("spaces")
def index_spaces(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every registered embedding space: its bundle, its index, and its role (live, canary,
    previous) in the deployment."""
    deployments = _deployments(read_settings(RouterSettings))
    state = deployments.state()

    def role(space: str) -> str:
        named = [(state.live, "live"), (state.canary, f"canary {state.canary_percent:g}%"),
                 (state.previous, "previous")]  # fmt: skip
        return ", ".join(name for s, name in named if s == space)

    rows = [
        {"space_id": r.space_id, "role": role(r.space_id), "index": r.index,
         "bundle": str(r.bundle), "registered_at": r.registered_at}
        for r in sorted(deployments.spaces().values(), key=lambda r: r.registered_at)
    ]  # fmt: skip
    if as_json:
        out.print_json(json.dumps({"deployment": state.model_dump(), "spaces": rows}))
        return
    _print_state(state)
    for row in rows:
        out.print(f"{row['space_id']:26s} {row['role']:14s} {row['index']}  {row['bundle']}")


@index_app.command("acl")
def index_acl(
    role: Annotated[str, typer.Argument(help="worker (crossroute worker, reindex) or api.")],
    user: Annotated[str | None, typer.Option(help="User name (default crossroute-ROLE).")] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            help="Name of an environment variable holding the user's password: the line then "
            "carries its sha256 (#…), never the password.",
        ),
    ] = None,
) -> None:
    """Print the least-privilege Redis ACL user of a role over CROSSROUTE_INDEX__NAMESPACE, as a
    users.acl line: worker reads the namespace and writes only spaces, the deployment and the
    ticket log; api only reads and searches; neither can FLUSHALL, CONFIG, KEYS or touch another
    namespace."""
    import os

    from router.acl import ROLES, acl_user_line

    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: choose from {', '.join(ROLES)}")
    settings = read_settings(RouterSettings).index
    password = None
    if password_env is not None:
        password = os.environ.get(password_env, "")
        if not password:
            raise UsageError(f"environment variable {password_env} is unset or empty")
    line = acl_user_line(
        user or f"crossroute-{role}", role, settings.namespace, settings.alias, password
    )
    out.print(line, highlight=False, soft_wrap=True)


@index_app.command("digest")
def index_digest(
    name: Annotated[
        str | None, typer.Option("--index", help="Index name or alias (default: `live`).")
    ] = None,
) -> None:
    """A digest over an index's sorted keys, vectors and metadata (not the write times): two
    builds from the same bundle and the same topic contents print the same digest."""
    from router.index import VectorIndex

    settings = read_settings(RouterSettings)
    client = redis_client(settings.redis, settings.stack)
    index = VectorIndex.open(client, name or settings.index.alias, settings.index)
    digest, count = index.digest()
    out.print(f"{digest}  {index.name} ({count} documents)")


def _parse_percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise UsageError(f"--canary takes a percentage such as 5% or 0.5, not {text!r}") from None
    if not 0 < value <= 100:
        raise UsageError(f"--canary must be in (0, 100] %, not {text!r}")
    return value


@app.command("promote", rich_help_panel=PANEL)
def promote_cmd(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Bundle of the space to promote or canary (default: the canary)."
        ),
    ] = None,
    canary: Annotated[
        str | None,
        typer.Option(
            help="Serve this percentage of tickets from the space (5% or 5 mean five per cent; "
            "0.5 is half a per cent), chosen by hashing the ticket id; the rest stay on live."
        ),
    ] = None,
    stop_canary: Annotated[
        bool, typer.Option("--stop-canary", help="End the canary; live keeps serving everything.")
    ] = False,
) -> None:
    """Canary a space (--canary 5%), complete the flip (no --canary: the canary, or --model,
    becomes live), or end a canary. API and worker follow without a restart."""
    settings = read_settings(RouterSettings)
    deployments = _deployments(settings)
    if stop_canary:
        state = deployments.state()
        if state.canary is None:
            raise UsageError("no canary is running")
        _print_state(deployments.start_canary(state.canary, 0))
        return
    space: str | None = None
    if model is not None:
        embedder = load_embedder(settings.model, model)
        index = _existing_index(settings, embedder, None)
        _register(settings, embedder, index)
        space = embedder.space_id
    if canary is not None:
        if space is None:
            raise UsageError("--canary needs --model: the bundle whose space takes the share")
        _print_state(deployments.start_canary(space, _parse_percent(canary)))
    else:
        _print_state(deployments.promote(space))


@app.command("rollback", rich_help_panel=PANEL)
def rollback_cmd() -> None:
    """Return to the previous live space in one step (ends any canary; the index rolled back
    from is kept until dropped with `crossroute index drop`)."""
    _print_state(_deployments(read_settings(RouterSettings)).rollback())


@index_app.command("info")
def index_info(
    name: Annotated[str | None, typer.Argument(help="Index or alias (default: `live`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The space, document count and indexing failures of an index or alias."""
    from router.index import VectorIndex

    settings = read_settings(RouterSettings)
    client = redis_client(settings.redis, settings.stack)
    index = VectorIndex.open(client, name or settings.index.alias, settings.index)
    info = {
        "index": index.name,
        "space_id": index.space_id,
        "dim": index.space.dim,
        "documents": index.count(),
        "hash_indexing_failures": index.indexing_failures(),
    }
    if as_json:
        out.print_json(json.dumps(info))
    else:
        for key, value in info.items():
            out.print(f"{key:24s} {value}")


@index_app.command("drop")
def index_drop(
    model: ModelOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Even a live or canary space (then nothing serves until the next "
            "`crossroute promote`).",
        ),
    ] = False,
) -> None:
    """Drop the index of a bundle's space with its documents (by the index's own name, never
    through an alias). Refused while the space is live or the canary (unless --force); dropping
    the previous live space ends the possibility of `crossroute rollback`."""
    settings = read_settings(RouterSettings)
    index = _existing_index(settings, load_embedder(settings.model, model), None)
    deployments = _deployments(settings)
    if not force:
        deployments.check_droppable(index.space_id)
    if not yes and not typer.confirm(f"drop {index.name} and its {index.count()} documents?"):
        raise typer.Exit(EXIT_FAILURE)
    deployments.forget(index.space_id, force=force)
    index.drop()
    out.print(f"dropped {index.name}")


# -- calibrate, route, api -----------------------------------------------------------------------


@app.command("calibrate", rich_help_panel=PANEL)
def calibrate_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="Labelled dataset folder with out-of-scope queries (EVAL.md).")
    ],
    model: ModelOpt = None,
) -> None:
    """Fit the abstain threshold of a bundle's space (out-of-scope F1 optimum on DATASET) and store
    it as {space_id}.json, where the router and the API pick it up for that space only."""
    from models.eval.dataset import load_dataset
    from router.evaluate import calibrate
    from router.routing import calibration_dir

    settings = read_settings(RouterSettings)
    data = load_dataset(dataset)
    embedder = load_embedder(settings.model, model)
    with progress(f"calibrating {embedder.space_id} on {data.name}") as step:
        cal, path = calibrate(data, embedder, calibration_dir(settings.routing), step)
    out.print(
        f"threshold {cal.threshold:.4f} (out-of-scope P {cal.precision:.3f} R {cal.recall:.3f} "
        f"F1 {cal.f1:.3f} on {data.name}) → {path}"
    )


def _router(settings: RouterSettings, model: Path | None, index_name: str | None) -> Router:
    from router.routing import Router

    embedder = load_embedder(settings.model, model)
    index = _existing_index(settings, embedder, index_name or settings.index.alias)
    return Router(embedder, index, settings.routing)


@app.command("route", rich_help_panel=PANEL)
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
    index: IndexOpt = None,
) -> None:
    """Route one ticket from the terminal and print the decision as JSON."""
    from models.bundle import load_manifest
    from models.preprocess import read_image_bytes
    from router.schemas import Ticket

    settings = read_settings(RouterSettings)
    try:
        ticket = Ticket(
            id="cli", tenant=tenant, locale=locale, text=text, product_category=category,
        )  # fmt: skip
    except ValidationError as e:
        raise UsageError(f"invalid ticket: {e.errors(include_url=False)[0]['msg']}") from e
    bundle = settings.model.resolved_bundle_dir(model)
    limits = load_manifest(bundle, verify=False).spec.image.preprocess.limits
    photo_bytes = read_image_bytes(photo, limits, str(photo)) if photo else None
    shot_bytes = read_image_bytes(screenshot, limits, str(screenshot)) if screenshot else None
    if not text.strip() and photo_bytes is None and shot_bytes is None:
        raise UsageError("give --text, --photo or --screenshot")
    router = _router(settings, model, index)
    decision = router.route(ticket, photo=photo_bytes, screenshot=shot_bytes, k=k)
    out.print_json(decision.model_dump_json())


def serve_api(
    settings: RouterSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    model: Path | None = None,
    index: str | None = None,
    no_auth: bool = False,
    feedback: FeedbackSink | None = None,
    extend: Callable[[FastAPI], None] | None = None,
) -> None:
    """Serve the HTTP API until stopped (``crossroute api``, a command of ``streams``, which adds
    the Kafka ``feedback`` sink and the console's pipeline pages through ``extend``).

    Without ``model``/``index`` it serves the deployment (the live space, and the canary's share
    of tickets) and follows ``crossroute promote``/``rollback`` without a restart; with either,
    that one space only."""
    from router.api import create_app, serve
    from router.outcomes import Outcomes
    from router.serving import Serving, router_loader

    client = redis_client(settings.redis, settings.stack)
    deployments = _deployments(settings)
    serving: Serving
    if model is not None or index is not None or deployments.state().live is None:
        serving = Serving.fixed(_router(settings, model, index))  # one space, never follows
        following = "fixed"
    else:
        load = router_loader(client, settings.model, settings.index, settings.routing)
        serving = Serving.following(deployments, load, poll_s=settings.routing.deployment_poll_s)
        serving.start()
        following = "following the deployment"
    api = settings.api.model_copy(
        update={
            "host": host or settings.api.host,
            "port": port or settings.api.port,
            "auth": "off" if no_auth else settings.api.auth,
        }
    )
    # refuses limits the served bundle cannot honour
    app_ = create_app(
        serving, api, outcomes=Outcomes(client, settings.index.namespace), feedback=feedback
    )
    if extend is not None:
        extend(app_)
    info = serving.describe()
    canary = f", canary {info['canary']} at {info['canary_percent']:g}%" if info["canary"] else ""
    err.print(
        f"serving space {info['space_id']} from {info['index']}{canary} ({following}), threshold "
        f"{info['threshold']:.3f} ({info['threshold_source']}) on http://{api.host}:{api.port}"
    )
    if api.auth == "off":
        err.print(
            "[bold red]WARNING: authentication is OFF[/bold red]: anyone who reaches "
            f"{api.host}:{api.port} can route and search for every tenant. Local development only."
        )
    else:
        err.print("API keys required: `crossroute keys create --tenant T` makes one")
    err.print(f"web console: http://{api.host}:{api.port}/console/")
    serve(app_, api)


def _key_store(settings: RouterSettings) -> KeyStore:
    from router.auth import KeyStore

    return KeyStore(redis_client(settings.redis, settings.stack), settings.index.namespace)


def _key_row(key: ApiKey) -> dict[str, Any]:
    return key.model_dump(mode="json") | {"active": key.active}


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The one tenant the key acts for.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="route, search, queue (list and answer the human queue) or admin (repeat for "
            "several; admin allows all, and /metrics). Default: route and search.",
        ),
    ] = None,
    label: Annotated[str, typer.Option(help="Who or what uses the key (shown by list).")] = "",
    rate: Annotated[
        float | None,
        typer.Option(
            help="Requests/s for this key (default CROSSROUTE_API__RATE_PER_S).", min=0.01
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key and print it once: only its hash is stored, it cannot be shown again."""
    from router.auth import SCOPES

    scopes = scope or ["route", "search"]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise UsageError(f"unknown scope {', '.join(unknown)}: choose from {', '.join(SCOPES)}")
    try:
        key, token = _key_store(read_settings(RouterSettings)).create(
            tenant, [s for s in SCOPES if s in scopes], label=label, rate_per_s=rate
        )
    except ValidationError as e:
        raise UsageError(f"invalid key: {e.errors(include_url=False)[0]['msg']}") from e
    if as_json:
        out.print_json(json.dumps(_key_row(key) | {"token": token}))
        return
    err.print(
        f"key {key.key_id} for tenant {key.tenant} ({', '.join(key.scopes)}); store it now, "
        "it is not shown again:"
    )
    out.print(token, soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every key (never its secret): id, tenant, scopes, created, revoked."""
    keys = _key_store(read_settings(RouterSettings)).list(tenant)
    if as_json:
        out.print_json(json.dumps([_key_row(k) for k in keys]))
        return
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        out.print(
            f"{k.key_id}  {k.tenant:20s} {','.join(k.scopes):20s} {k.created_at}  {state}"
            + (f"  {k.label}" if k.label else ""),
            highlight=False,
        )
    if not keys:
        err.print("no API keys" + (f" for tenant {tenant}" if tenant else ""))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (`crossroute keys list`).")],
) -> None:
    """Revoke a key: every API process refuses it within CROSSROUTE_API__KEY_CACHE_S seconds."""
    from router.auth import KeyNotFoundError

    try:
        key = _key_store(read_settings(RouterSettings)).revoke(key_id)
    except KeyNotFoundError as e:
        raise UsageError(str(e)) from e
    err.print(f"revoked {key.key_id} (tenant {key.tenant}) at {key.revoked_at}")


# -- bench index --------------------------------------------------------------------------------


@bench_app.command("index")
def bench_index_cmd(
    data: Annotated[
        Path, typer.Option(help="The shared data root (its myntra-t2i catalog is embedded).")
    ] = Path("../shared/data"),
    model: ModelOpt = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="10k vectors (2k real), one build, three EF_RUNTIME (about a minute)."
        ),
    ] = False,
    n: Annotated[int | None, typer.Option(help="Vectors (default 100000; --quick 10000).")] = None,
    defaults_only: Annotated[
        bool,
        typer.Option(
            "--defaults-only",
            help="Only the default build (M 16, EF_CONSTRUCTION 100) and "
            "EF_RUNTIME 10/50/100, at full size: the grid's cheapest useful point.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json", help="JSON report (default bench/index.json; --quick bench/index-quick.json)."
        ),
    ] = None,
) -> None:
    """HNSW on real catalog embeddings (augmented to N): recall@10 against exact, p50/p95, QPS,
    load rate and memory per document over a grid of M / EF_CONSTRUCTION / EF_RUNTIME, with and
    without tenant/category filters; `best` is the cheapest setting with recall@10 ≥ 0.98."""
    from models.bench import write_bench
    from models.settings import xdg_dir
    from router.bench import GRID, QUICK_GRID, bench_index

    settings = read_settings(RouterSettings)
    embedder = load_embedder(settings.model, model)
    client = redis_client(settings.redis, settings.stack)
    with progress("benchmarking the index") as step:
        report = bench_index(
            client, embedder, data, n=n or (10_000 if quick else 100_000),
            real=2_000 if quick else None,
            grid=QUICK_GRID if quick or defaults_only else GRID,
            cache_dir=xdg_dir("cache") / "bench",
            progress=step,
        )  # fmt: skip
    json_out = write_bench("index", embedder, quick, json_out, report, defaults_only=defaults_only)
    for build in report["builds"]:
        for run in build["runs"]:
            out.print(
                f"M={build['m']:<3} EF_C={build['ef_construction']:<4} EF_R={run['ef_runtime']:<4} "
                f"{run['filter']:16} recall@10 {run['recall_at_10']:.4f}  p50 {run['p50_ms']:.2f} ms"
                f"  p95 {run['p95_ms']:.2f} ms  {run['qps']:.0f} q/s"
            )
    best = report["best"]
    out.print(
        f"best {best['params']}: recall@10 {best['recall_at_10']:.4f}, p50 {best['p50_ms']:.2f} ms, "
        f"{best['bytes_per_doc']:.0f} B/doc, {best['load_docs_per_s']:.0f} docs/s → {json_out}"
    )


# -- bench route --------------------------------------------------------------------------------


@bench_app.command("route")
def bench_route_cmd(
    data: Annotated[
        Path, typer.Option(help="The shared data root (stackfaq and photo-routing are read).")
    ] = Path("../shared/data"),
    model: ModelOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="30 requests per kind (a minute).")
    ] = False,
    requests: Annotated[
        int | None, typer.Option(help="Requests per ticket kind (default 200; --quick 30).")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json", help="JSON report (default bench/route.json; --quick bench/route-quick.json)."
        ),
    ] = None,
) -> None:
    """`POST /v1/route` latency (p50/p95/p99) for text, text+photo and text+screenshot tickets
    against a real index, beside the encoder latency of the same inputs in the same run
    (overhead = route minus encoder, per request), and text tickets at 1, 4 and 16 clients."""
    import uuid

    from models.bench import write_bench
    from models.eval.dataset import load_dataset
    from router.bench import bench_route, route_cases
    from router.index import VectorIndex
    from router.loading import index_dataset
    from router.routing import Router

    settings = read_settings(RouterSettings)
    embedder = load_embedder(settings.model, model)
    client = redis_client(settings.redis, settings.stack)
    temp = settings.index.model_copy(update={"namespace": f"bench{uuid.uuid4().hex[:8]}"})
    index = VectorIndex.for_manifest(client, embedder.manifest, temp)
    n = requests or (30 if quick else 200)
    try:
        with progress("benchmarking routing") as step:
            for name in ("stackfaq", "photo-routing"):
                index_dataset(load_dataset(data / name), embedder, index, tenant="bench")
            router = Router(embedder, index, settings.routing)
            report = bench_route(router, route_cases(data, 50, "bench"), requests=n, progress=step)
    finally:
        index.drop()
    json_out = write_bench("route", embedder, quick, json_out, report)
    for kind in ("text", "photo", "screenshot"):
        r = report[kind]
        out.print(
            f"{kind:10} p50 {r['p50_ms']:.1f}  p95 {r['p95_ms']:.1f}  p99 {r['p99_ms']:.1f} ms; "
            f"encoder p95 {r['encoder_p95_ms']:.1f} ms, overhead p95 {r['overhead_p95_ms']:.1f} ms"
        )
    for level in report["concurrency"]:
        out.print(
            f"text, {level['clients']:>2} clients: {level['requests_per_s']:.1f} req/s, "
            f"p95 {level['p95_ms']:.1f} ms"
        )
    out.print(f"→ {json_out}")


# -- eval --index redis --------------------------------------------------------------------------


@contextmanager
def redis_evaluator() -> Iterator[Evaluator]:
    """The ``redis`` backend of ``crossroute eval --index``: reads :class:`RouterSettings` once,
    opens one Redis client, and yields an evaluator that retrieves through a temporary index of
    each bundle's space there (registered by the entry module, ``streams.main``)."""
    from router.evaluate import evaluate_on_redis

    settings = read_settings(RouterSettings)
    client = redis_client(settings.redis, settings.stack)

    def evaluate(dataset: Dataset, embedder: Embedder, **options: Any) -> dict[str, Any]:
        return evaluate_on_redis(dataset, embedder, client, settings.index, **options)

    try:
        yield evaluate
    finally:
        client.close()
