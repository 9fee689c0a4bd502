"""``crossroute`` commands of the embedding layer: bundles, benchmarks, pair audits, training, eval.

Each command parses its flags, reads :class:`~models.settings.ModelsSettings` once, calls the
function of this package that does the work and prints what it returned. The entry module
(``streams.main``) merges :data:`app` into the ``crossroute`` command under the "Models" panel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from models.clikit import (
    EXIT_FAILURE,
    BundleOpt,
    ModelOpt,
    err,
    group,
    load_embedder,
    out,
    progress,
    read_settings,
)
from models.exceptions import UsageError
from models.settings import ModelsSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from models.progress import Progress

__all__ = ["PANEL", "app", "bench_app"]

PANEL = "Models: bundles, training, evaluation"

app: typer.Typer = typer.Typer()
models_app = group(
    app,
    "models",
    PANEL,
    "Model bundles: frozen encoders exported to ONNX with a manifest (sha256 of every file, "
    "preprocessing, library versions) and the embedding space id derived from them.",
)
bench_app = group(app, "bench", PANEL, "Benchmarks that write JSON reports.")
"""``crossroute bench``: the other packages add their benchmarks to this group."""
pairs_app = group(app, "pairs", PANEL, "Training pairs: audit and clean them before training.")


# -- models build | verify | info --------------------------------------------------------------


@models_app.command("build")
def models_build(
    config: Annotated[
        str, typer.Option(help="Packaged config name (models/configs/NAME.json) or a JSON file.")
    ] = "default",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Bundle folder to write (replaced atomically)."),
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
    target = read_settings(ModelsSettings).model.resolved_bundle_dir(out_dir)
    with progress(f"building bundle {spec.name}") as step:
        manifest = build_bundle(spec, target, progress=step)
    out.print(
        f"built {target}\nspace id: {manifest.space_id} (dim {manifest.dim}, {manifest.metric})"
    )
    if manifest.text.quantization:
        q = manifest.text.quantization
        out.print(
            f"int8 text encoder: cosine vs fp32 min {q['fidelity_cosine_vs_fp32_min']}, "
            f"mean {q['fidelity_cosine_vs_fp32_mean']} on {q['fidelity_texts']} texts"
        )


@models_app.command("verify")
def models_verify(bundle: BundleOpt = None) -> None:
    """Check every file of a bundle against its manifest (sha256) and the space id against them.
    Exits 1 on a tampered or partial bundle."""
    from models.bundle import load_manifest

    target = read_settings(ModelsSettings).model.resolved_bundle_dir(bundle)
    manifest = load_manifest(target, verify=True)
    out.print(f"ok: {target} space {manifest.space_id}, {len(manifest.files)} files verified")


@models_app.command("info")
def models_info(
    bundle: BundleOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest.")] = False,
) -> None:
    """Describe a bundle: space id, encoders, dims, preprocessing, files."""
    from models.bundle import load_manifest

    manifest = load_manifest(
        read_settings(ModelsSettings).model.resolved_bundle_dir(bundle), verify=False
    )
    if as_json:
        out.print_json(manifest.model_dump_json())
        return
    spec = manifest.spec
    out.print(
        f"space id  {manifest.space_id}  ({manifest.dim}-d {manifest.dtype}, {manifest.metric})"
    )
    text, image = manifest.text, manifest.image
    max_len = spec.text.preprocess.max_length
    lexical = spec.text.preprocess.lexical
    words = f", + {lexical.dim}-bin hashed words" if lexical is not None else ""
    out.print(
        f"text      {spec.text.name} → {text.onnx} ({text.dim}-d, max {max_len} tokens{words})"
    )
    pre = spec.image.preprocess
    extras = [f"{pre.size}px", f"crop {pre.crop}"]
    if pre.stages and image.stages_dim:
        extras.append(f"+ {image.stages_dim}-d stage features")
    if pre.colour is not None:
        extras.append(f"+ {pre.colour.dim}-bin colour histogram")
    out.print(f"image     {spec.image.name} → {image.onnx} ({image.dim}-d, {', '.join(extras)})")
    out.print(f"ocr       {spec.ocr.name if spec.ocr else '-'}")
    shipped = f", shipped head {spec.head.shipped!r}" if spec.head.shipped else ""
    trained = f" ({manifest.dim}-d{shipped})" if manifest.projection is not None else ""
    out.print(f"head      {spec.head.method}{trained}")
    out.print(
        f"files     {len(manifest.files)}, {sum(f.bytes for f in manifest.files.values()) / 1e6:.1f} MB"
    )


# -- models head reproduce | export --------------------------------------------------------------

head_app = group(
    models_app,
    "head",
    PANEL,
    "Heads shipped in the package (models/heads/NAME): the trained projection the default "
    "bundle serves. Reproduce one from the public data, or ship one you trained.",
)


@head_app.command("reproduce")
def head_reproduce(
    name: Annotated[str, typer.Argument(help="Shipped head to reproduce.")] = "mined",
    data: Annotated[
        Path, typer.Option(help="Root of the datasets named in the head's recipe.")
    ] = Path("../shared/data"),
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the reproduced head (default: a cache folder)."),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="Bundle whose encoders to train on (default: the recipe's base config, built "
            "once into the cache).",
        ),
    ] = None,
) -> None:
    """Retrain a shipped head from its recipe (datasets, method, seed, hyperparameters) and compare
    it with the shipped one: "identical" (same sha256), "equivalent" (same training data, weights
    equal up to float rounding of the encoders' features on this machine, same validation metrics)
    or "different" (exit 1). Needs crossroute[train]; about 15 minutes on two cores (features are
    cached for the next run)."""
    from models.settings import xdg_dir
    from models.shipped import compare_heads, shipped_head_dir
    from models.train.run import reproduce_head

    settings = read_settings(ModelsSettings)
    target = out_dir if out_dir is not None else xdg_dir("cache") / "heads" / name
    with progress(f"reproducing the shipped head {name}") as step:
        base_dir = base if base is not None else _recipe_base(name, step)
        shipped, head = reproduce_head(
            name, data, target, base_dir=base_dir, cache_dir=settings.model.cache_dir,
            progress=step, epoch_progress=_epoch_lines(step),
        )  # fmt: skip
    out.print(
        f"shipped     {shipped.weights_sha256}\nreproduced  {head.weights_sha256}  ({target})"
    )
    comparison = compare_heads(shipped, shipped_head_dir(name), head, target)
    out.print(comparison.summary(), highlight=False)
    if not comparison.equivalent:
        err.print("[red]the reproduced weights differ from the shipped ones[/red]")
        raise typer.Exit(EXIT_FAILURE)


def _epoch_lines(step: Progress) -> Callable[[str, int, int], None]:
    """Training progress for ``step``: a line every 5 epochs of a stage, and at its last."""

    def epochs(stage: str, epoch: int, total: int) -> None:
        if epoch == total or epoch % 5 == 0:
            step(f"{stage}: epoch {epoch}/{total}")

    return epochs


def _recipe_base(name: str, step: Progress) -> Path:
    """The base bundle a shipped head's recipe names, built into the cache when missing."""
    from models.bundle import load_manifest
    from models.config import load_spec
    from models.export.build import build_bundle
    from models.settings import xdg_dir
    from models.shipped import read_shipped_head

    config = read_shipped_head(name).recipe.base_config
    spec = load_spec(config)
    folder = xdg_dir("cache") / "bundles" / config
    if (folder / "manifest.json").is_file() and load_manifest(folder).spec == spec:
        return folder
    step(f"building the base bundle ({config}) into {folder}")
    build_bundle(spec, folder, progress=step)
    return folder


@head_app.command("export")
def head_export(
    bundle: Annotated[Path, typer.Argument(help="A bundle `crossroute train` wrote.")],
    name: Annotated[str, typer.Option(help="Name to ship the head as.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (models/heads/NAME).")],
    metrics: Annotated[
        list[Path] | None,
        typer.Option(
            "--metrics", help="`crossroute eval --json` reports to record as its dev metrics."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="A `crossroute calibrate` record (CALIBRATION_DIR/SPACE.json) fitted on public "
            "data with this head: the threshold routers use until calibrated on their own data."
        ),
    ] = None,
    storage: Annotated[
        str, typer.Option(help="float16 (half the size; eval holds) | float32.")
    ] = "float16",
) -> None:
    """Turn a trained bundle into a shippable head: weights (float16 by default) with their sha256,
    the training record and recipe, the encoders and preprocessing it reads, dev metrics. Point a
    config's ``head.shipped`` at it and `crossroute models build` serves it."""
    from models.bundle import load_manifest
    from models.shipped import HeadRecipe, write_shipped_head

    _one_of("--storage", storage, ("float16", "float32"))
    manifest = load_manifest(bundle)
    record = manifest.projection.training if manifest.projection is not None else {}
    if "pair_folders" not in record:
        raise UsageError(
            f"{bundle}: no training recipe in its manifest; train it with `crossroute train`"
        )
    recipe = HeadRecipe(
        method=manifest.spec.head.method,
        pairs=tuple(record["pair_folders"]),
        support=tuple(record.get("support_folders", ())),
    )
    dev: dict[str, dict[str, float]] = {}
    for path in metrics or []:
        report = json.loads(path.read_text())
        dev[report["dataset"]] = {
            k: float(v) for k, v in report["metrics"].items() if isinstance(v, int | float)
        }
    head = write_shipped_head(
        bundle, manifest, out_dir, name=name, recipe=recipe, dev_metrics=dev,
        calibration=json.loads(calibration.read_text()) if calibration else None,
        storage=storage,  # type: ignore[arg-type]
    )  # fmt: skip
    size = (out_dir / head.weights).stat().st_size / 1e6
    out.print(f"wrote {out_dir}: {head.method} head, {size:.1f} MB, sha256 {head.weights_sha256}")


# -- bench encoders ------------------------------------------------------------------------------


@bench_app.command("encoders")
def bench_encoders_cmd(
    bundle: BundleOpt = None,
    data: Annotated[
        Path,
        typer.Option(help="A dataset root in the eval layout (texts and images are read from it)."),
    ] = Path("../shared/data"),
    out_file: Annotated[Path, typer.Option("--out", help="JSON report to write.")] = Path(
        "bench/encoders.json"
    ),
    seconds: Annotated[float, typer.Option(help="Minimum seconds per measured point.")] = 3.0,
    threads: Annotated[
        int | None, typer.Option(help="Threads for onnxruntime and torch (default: all cores).")
    ] = None,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Skip the torch reference.")] = False,
) -> None:
    """Texts/s and images/s at batch 1 and 32: ONNX serving path vs the torch reference."""
    from models.bench import bench_encoders, bench_inputs

    texts, images = bench_inputs(data)
    embedder = load_embedder(read_settings(ModelsSettings).model, bundle, threads)
    with progress("benchmarking encoders"):
        report = bench_encoders(
            embedder, texts, images, min_seconds=seconds, torch_reference=not no_torch,
            threads=threads,
        )  # fmt: skip
    _write_json(out_file, report)
    for row in report["results"]:
        what = f"{row['modality']:5} {row['engine']:11} {row['stage']:26} batch {row['batch']:>2}"
        out.print(f"{what}: {row['items_per_s']:>8.1f}/s")
    out.print(f"onnx/torch: {report['onnx_over_torch']}  → {out_file}")


def _write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


# -- pairs audit ---------------------------------------------------------------------------------


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

    embedder = load_embedder(read_settings(ModelsSettings).model, model)
    with progress(f"auditing {dataset}") as step:
        report, drops = audit_pairs(
            dataset, embedder, min_slice_pairs=min_slice_pairs, progress=step
        )
    out.print(
        f"{report['dataset']}: {report['pairs']} pairs, {report['groups']} groups; "
        f"drop {report['dropped']} {report['dropped_by_reason']}"
    )
    out.print(
        f"near-duplicate images {report['near_duplicate_images']}, images in several groups "
        f"{report['images_in_several_groups']}, titles in several groups {report['titles_in_several_groups']}"
    )
    thin = report["coverage"]["thin_head_nouns"]
    out.print(
        f"thin slices (< {min_slice_pairs} pairs): {len(thin)} head nouns, e.g. {list(thin)[:8]}"
    )
    worst = ", ".join(
        f"{t['token']} ({t['visual_coherence']:+.3f}, {t['count']})"
        for t in report["poorly_grounded_tokens"][:10]
    )
    out.print(f"poorly grounded words (visual coherence, count): {worst or 'none'}")
    if json_out is not None:
        _write_json(json_out, report)
    if filter_out is not None:
        kept, dropped = write_filtered(dataset, filter_out, drops)
        out.print(f"wrote {kept} pairs to {filter_out / 'pairs.jsonl'}, {dropped} to dropped.jsonl")


# -- train ---------------------------------------------------------------------------------------

METHODS = ("naive", "linear", "inbatch", "mined")
CROPS = ("pad", "center")


@app.command("train", rich_help_panel=PANEL)
def train_cmd(
    pairs: Annotated[
        list[Path],
        typer.Argument(help="Dataset folders whose pairs.jsonl to train on (text, image, group)."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
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

    _one_of("--method", method, METHODS)
    _one_of("--image-crop", image_crop, CROPS)
    settings = read_settings(ModelsSettings)
    with progress(f"training ({method})") as step:
        manifest = train_bundle(
            settings.model.resolved_bundle_dir(base), pairs, out_dir, method=method,  # type: ignore[arg-type]
            support_folders=support or [], cache_dir=settings.model.cache_dir,
            progress=step, epoch_progress=_epoch_lines(step),
            image_crop=image_crop, colour=colour, stages=stages,  # type: ignore[arg-type]
            lexical=lexical, edits=edits,
        )  # fmt: skip
    out.print(f"wrote {out_dir}\nspace id: {manifest.space_id} (head {method}, {manifest.dim}-d)")


def _one_of(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        allowed = " or ".join(filter(None, (", ".join(choices[:-1]), choices[-1])))
        raise UsageError(f"{flag} must be {allowed}, not {value!r}")


# -- eval ----------------------------------------------------------------------------------------


@app.command("eval", rich_help_panel=PANEL)
def eval_cmd(
    dataset: Annotated[
        Path,
        typer.Argument(help="Dataset folder: corpus.jsonl, queries.jsonl, qrels.tsv, images/."),
    ],
    model: ModelOpt = None,
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
            "queries (each fold routed with the other folds as exemplars; near-duplicate queries "
            "kept in one fold; out-of-scope F1 at thresholds fitted on the other folds).",
        ),
    ] = 0,
    cv_plain: Annotated[
        bool,
        typer.Option(
            "--cv-plain",
            help="With --exemplars-cv: plain folds that split near-duplicates (overstates; for "
            "comparison only).",
        ),
    ] = False,
    human_exemplars: Annotated[
        bool,
        typer.Option(
            "--human-exemplars/--no-human-exemplars",
            help="Out-of-scope queries of the exemplar source (--exemplars, or the other folds) "
            "become exemplars of the human queue: a ticket closer to one than to any target "
            "abstains.",
        ),
    ] = True,
    exemplar_rule: Annotated[
        str,
        typer.Option(
            "--exemplar-rule",
            help="How exemplars score their target: prototype (the cosine with the normalised "
            "sum of its own and its exemplars' vectors; the router's default) | max (the best of "
            "its own and its exemplars' cosines).",
        ),
    ] = "prototype",
) -> None:
    """Evaluate a bundle on a dataset folder (../shared/docs/EVAL.md): recall@K, MRR@10, nDCG@10,
    out-of-scope precision/recall/F1, per-slice metrics, query-embedding latency."""
    from models.eval.backends import evaluators
    from models.eval.dataset import load_dataset
    from models.eval.decision import EXEMPLAR_RULES
    from models.eval.report import compare_reports, render_html
    from models.eval.run import escalated_texts, exemplar_pairs

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError as e:
        raise UsageError(f"--k must be comma-separated integers, got {k!r}") from e
    if not ks or ks[0] < 1:
        raise UsageError(f"--k must list positive integers, got {k!r}")
    backends = evaluators()
    _one_of("--index", index, tuple(sorted(backends)))
    _one_of("--exemplar-rule", exemplar_rule, EXEMPLAR_RULES)
    if exemplars is not None and exemplars_cv:
        raise UsageError("give --exemplars or --exemplars-cv, not both")
    settings = read_settings(ModelsSettings)
    data = load_dataset(dataset)
    embedder = load_embedder(settings.model, model)
    source = load_dataset(exemplars) if exemplars else None
    options: dict[str, Any] = {
        "ks": ks,
        "threshold": threshold,
        "exemplars": exemplar_pairs(source) if source else (),
        "escalated": escalated_texts(source) if source else (),
        "exemplar_folds": exemplars_cv,
        "grouped": not cv_plain,
        "human_exemplars": human_exemplars,
        "exemplar_rule": exemplar_rule,
    }

    with (
        backends[index]() as run,
        progress(f"evaluating {embedder.space_id} on {data.name}") as step,
    ):
        result = run(data, embedder, progress=step, **options)
        other = comparison = None
        if compare is not None:
            other = run(data, load_embedder(settings.model, compare), progress=step, **options)
            comparison = compare_reports(result, other)
    if comparison is not None:
        result["comparison"] = comparison
    _print_eval(result)
    if json_out is not None:
        _write_json(json_out, result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        page = render_html(result, comparison, other)
        report.write_text(page)
        kept = keep_report(settings.model.reports_dir, result, page)
        err.print(f"report kept for the console's models page: {kept}")


def keep_report(reports_dir: Path, result: dict[str, Any], page: str) -> Path:
    """Keep an eval report as its space's latest on its dataset: ``{space}/{dataset}.html`` and
    the result as ``.json`` (written whole, then renamed: a reader never sees half a file)."""
    import re

    space = str(result["model"]["space_id"])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(result["dataset"])).strip("._") or "dataset"
    folder = reports_dir / space
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=2) + "\n"), (".html", page)):
        tmp = folder / f".{name}{suffix}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / f"{name}{suffix}")
    return folder / f"{name}.html"


def _print_eval(result: dict[str, Any]) -> None:
    metrics = result["metrics"]
    out.print(f"{result['dataset']}  space {result['model']['space_id']}  "
              f"queries {result['n_queries']}  corpus {result['n_corpus']}")  # fmt: skip
    out.print("  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    hnsw = result.get("hnsw")
    if isinstance(hnsw, dict):
        out.print(
            f"retrieval: {result['retrieval']}; recall@10 vs exact {hnsw['recall@10_vs_exact']}"
        )
    ex = result.get("exemplars")
    if isinstance(ex, dict):
        groups = f", {ex['groups']} groups" if "groups" in ex else ""
        out.print(f"exemplars: {ex['source']} ({ex['n']} labelled, {ex.get('human', 0)} human"
                  f"{groups}; rule {ex.get('rule', 'max')})")  # fmt: skip
    oos = result.get("out_of_scope")
    for block in (oos, oos.get("oracle") if isinstance(oos, dict) else None):
        if isinstance(block, dict):
            out.print(
                f"out of scope: threshold {block['threshold']:.4f} ({block['threshold_source']}) "
                f"P {block['precision']:.3f} R {block['recall']:.3f} F1 {block['f1']:.3f}; "
                f"in-scope accuracy {block['in_scope_accuracy']:.3f}"
            )
    comparison = result.get("comparison")
    if isinstance(comparison, dict):
        deltas = "  ".join(f"{n} {d:+.4f}" for n, d in comparison["metrics"].items())
        out.print(f"vs {comparison['old']}: {deltas}")
        for key, values in comparison["slices"].items():
            for value, m in values.items():
                flag = "  [red]WORSE[/red]" if m.get("recall@10", 0) < -0.01 else ""
                out.print(
                    f"  {key}={value} (n={m['n']}): recall@10 {m.get('recall@10', 0):+.4f}{flag}"
                )
