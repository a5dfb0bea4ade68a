"""The ``pairwise`` console script: run, demo, report, and classes (class embeddings from names).

Prefect's console output is turned down to what a user needs (our own lines
and the report); everything still reaches the Prefect API, so a run shows in
full in the UI when PREFECT_API_URL points at a server. --verbose brings
Prefect's console logs back.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

# A short-lived process with Prefect's temporary server: keep its background
# services' chatter (telemetry, sqlite "database is locked" retries) off the
# console, and give the server time to start on a busy machine (Prefect's 20 s
# timed out here with other jobs on both cores). Users' own settings win.
_QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


# Arrow's allocator (mimalloc) returns freed memory to the OS after 10 ms by
# default, and faulting it back in dominated decoding here. Never returning it
# (-1) was as fast but let the peak grow with the catalog (2.1 GB at 1M items);
# after 250 ms unused, memory that batches keep reusing stays, and the rest
# goes back: 1.44 GB at 1M, 1.38 GB at 100k, same wall time (bench/bench_pipeline.py).
# Read when pyarrow loads, so set before anything imports it.
ALLOCATOR_DEFAULTS = {"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ARENA_EAGER_COMMIT": "1"}


def tune_allocator() -> None:
    for key, value in ALLOCATOR_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _prepare_prefect(verbose: bool) -> None:
    """Set quiet defaults before Prefect is imported (its logging reads them at import)."""
    for key, value in _QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not verbose:
        # only the console handler: logs still reach the API, and so the UI
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_report(db: str, run_id: str) -> None:
    from tasks.report import render_report

    print(render_report(db, run_id))


def _point_to_html_report(db: str, run_id: str) -> None:
    """The flow files an HTML report beside the database: say where."""
    from tasks.html_report import report_path

    path = report_path(db, run_id)
    if path.is_file():
        _say(f"\nHTML report with figures: {path}")


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.reclassify import ReclassifyParams, reclassify_catalog
    from tasks.sources import inspect_sources

    fields = ("items", "classes", "db", "gold_column", "strategy", "cutoff", "min_dims", "max_dims", "min_items",
              "pair_margin", "score_floor", "candidates", "seed", "chunk_size", "run_id", "export_dir",
              "fit_fraction", "dask_address", "refine_iterations", "refine_temperature", "refine_anchor", "refine_eps",
              "refine_tau", "refine_sample", "calibration", "review")
    given = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    try:
        params = ReclassifyParams(**given)
    except ValidationError as error:
        first = error.errors()[0]
        option = f"--{str(first['loc'][0]).replace('_', '-')}: " if first["loc"] else ""  # a check of several
        raise ValueError(f"{option}{first['msg'].removeprefix('Value error, ')}") from None
    plan = inspect_sources(params.items, params.classes, db=params.db, gold_column=params.gold_column,
                           chunk_size=params.chunk_size)
    _say(f"Reclassifying {plan.n_items} items into {len(plan.class_names)} classes "
         f"({', '.join(plan.modalities)}) -> {params.db}")
    summary = _flow_or_fail(lambda: reclassify_catalog(params))
    print(summary["report"])  # the report the run published, not queried again
    _point_to_html_report(params.db, summary["run_id"])
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flows.demo import demo

    _say(f"Generating a synthetic catalog of {args.n_items} items, {args.n_classes} classes, into {args.db}, "
         "and reclassifying it (Prefect flow 'pairwise-demo')...")
    summary = _flow_or_fail(lambda: demo(
        db=args.db, n_items=args.n_items, n_classes=args.n_classes, seed=args.seed, strategy=args.strategy
    ))
    print(summary["report"])
    _point_to_html_report(args.db, summary["run_id"])
    _say(f"\nQuery it: .venv/bin/python -c \"import duckdb; "
         f"print(duckdb.connect('{args.db}', read_only=True).sql('SELECT * FROM current_labels LIMIT 5'))\"")
    return 0


def _report(args: argparse.Namespace) -> int:
    import duckdb

    if not os.path.isfile(args.db):
        raise ValueError(f"{args.db}: no such DuckDB file")
    try:
        if args.html:
            _write_html_report(args.db, args.run_id, args.html)
        else:
            _print_markdown_report(args.db, args.run_id)
    except duckdb.Error as error:  # not one of our files, or one a run is writing
        raise ValueError(f"{args.db}: cannot read it: {str(error).splitlines()[0]}") from None
    return 0


def _print_markdown_report(db: str, run_id: str | None) -> None:
    from tasks.report import latest_run_id

    run_id = run_id or latest_run_id(db)
    if run_id is None:
        raise ValueError(f"{db}: no runs yet")
    _print_report(db, run_id)


def _write_html_report(db: str, run_id: str | None, path: str) -> None:
    """The latest succeeded run by default: a running or failed run has no figures to show."""
    from tasks.html_report import write_report
    from tasks.report import latest_run_id

    run_id = run_id or latest_run_id(db, succeeded=True)
    if run_id is None:
        raise ValueError(f"{db}: no succeeded run yet")
    try:
        write_report(db, run_id, path)
    except OSError as error:
        raise ValueError(f"{path}: cannot write the report: {error.strerror or error}") from None
    _say(f"Wrote the HTML report of run {run_id} to {path}")


def _classes(args: argparse.Namespace) -> int:
    from flows.classes import build_classes

    table = build_classes(args.names, args.template or [], args.encoder, modalities=args.modality or [],
                          out=args.out, db=args.db, table=args.table)
    modalities = [name.removesuffix("_embedding") for name in table.column_names if name.endswith("_embedding")]
    where = args.out or f"table:{args.table} in {args.db}"
    _say(f"Wrote {table.num_rows} classes ({', '.join(modalities)}) to {where}")
    source = args.out or f"table:{args.table} --db {args.db}"
    _say(f"Use it: pairwise run --classes {source} ...")
    return 0


def _flow_or_fail(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a flow; a failure becomes one line (the run's reason), not a traceback."""
    try:
        return call()
    except ValueError:
        raise
    except Exception as error:  # the run is marked failed with this reason in `runs`
        raise RuntimeError(f"run failed: {type(error).__name__}: {error}".splitlines()[0]) from None


def _strategy(text: str) -> str:
    return text.replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairwise", description="Zero-shot catalog reclassification.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="reclassify a catalog and write the output tables to a DuckDB file")
    run.add_argument("--items", required=True, help="Parquet path, directory or glob, or table:NAME in --db")
    run.add_argument("--classes", required=True, help="Parquet path or glob, or table:NAME in --db")
    run.add_argument("--db", required=True, help="DuckDB file to write the output tables to")
    run.add_argument("--gold-column", help="items column holding the current (gold) label")
    run.add_argument("--strategy", type=_strategy, choices=["tourney", "round_robin"], help="default tourney")
    run.add_argument("--cutoff", type=float, help="cross-deviation ratio a dimension must exceed (default 1.05)")
    run.add_argument("--min-dims", type=int)
    run.add_argument("--max-dims", type=int)
    run.add_argument("--min-items", type=int)
    run.add_argument("--pair-margin", type=float)
    run.add_argument("--score-floor", type=float)
    run.add_argument("--candidates", type=int, help="many classes: only each item's top-m classes play")
    run.add_argument("--seed", type=int)
    run.add_argument("--chunk-size", type=int, help="rows per batch and partition (default 50000)")
    run.add_argument("--run-id")
    run.add_argument("--export-dir", help="also write the run's tables as Parquet files here")
    run.add_argument("--fit-fraction", type=float,
                     help="fit masks on this seeded share of partitions (default 1; not for class-sorted files)")
    run.add_argument("--dask-address", help="run the partition tasks on this Dask scheduler, e.g. tcp://host:8786")
    run.add_argument("--refine-iterations", type=int, help="EM iterations of the refinement")
    run.add_argument("--refine-temperature", type=float, help="refinement temperature, relative to the variance")
    run.add_argument("--refine-anchor", type=float, help="weight of the zero-shot anchor in the refinement")
    run.add_argument("--refine-eps", type=float, help="share of the anchor given to the cosine softmax")
    run.add_argument("--refine-tau", type=float, help="sharpness of the anchor's cosine softmax")
    run.add_argument("--refine-sample", type=int, help="rows of the seeded sample the refinement is fitted on")
    run.add_argument("--calibration", choices=["auto", "gold", "label-free"],
                     help="fit the confidence on the gold column out of fold, or not (auto: when one is given)")
    run.add_argument("--review", choices=["auto", "zero-shot", "label-aware", "both"],
                     help="with --gold-column, what annotation_issues ranks by: the zero-shot posterior, an "
                     "out-of-fold discriminant on the given labels, or both combined (default auto: both)")
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="reclassify a synthetic demo catalog and print the report")
    demo.add_argument("--db", default="pairwise-demo.duckdb")
    demo.add_argument("--n-items", type=int, default=20_000)
    demo.add_argument("--n-classes", type=int, default=13)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--strategy", type=_strategy, choices=["tourney", "round_robin"], default="tourney")
    demo.set_defaults(handler=_demo)

    report = commands.add_parser("report", help="print the report of the latest (or a given) run")
    report.add_argument("--db", required=True)
    report.add_argument("--run-id", help="default: the latest run (with --html, the latest succeeded run)")
    report.add_argument("--html", metavar="PATH",
                        help="write a self-contained HTML report with figures to PATH instead of printing Markdown")
    report.set_defaults(handler=_report)

    classes = commands.add_parser(
        "classes", help="embed class names through prompt templates into a classes table for `run --classes`")
    classes.add_argument("--names", required=True, metavar="FILE",
                         help="class names: a text file, one a line (blank lines skipped), or a .csv or .parquet "
                              "file with a class_name, class or name column (the first found)")
    classes.add_argument("--encoder", required=True, action="append", metavar="[MODALITY=]SPEC",
                         help="sentence-transformers:NAME_OR_FOLDER (or a bare folder), open_clip:MODEL/PRETRAINED, "
                              "hf-clip:NAME_OR_FOLDER, or python:MODULE:FUNCTION (list[str] -> (n, d) array); "
                              "once, or once per modality with a MODALITY= prefix (no default)")
    classes.add_argument("--template", action="append", metavar="[MODALITY=]TEMPLATE",
                         help="prompt with {} for the class name and {article} for a/an, e.g. image='a photo of "
                              "{article} {}.'; repeat for an ensemble (each prompt normalized, averaged, "
                              "re-normalized); no prefix: every modality (default '{}', the name alone)")
    classes.add_argument("--modality", action="append", metavar="NAME",
                         help="a modality to write, as <NAME>_embedding, matching the items' columns; repeat for "
                              "several (default: the modalities the prefixes name, else text)")
    destination = classes.add_mutually_exclusive_group(required=True)
    destination.add_argument("--out", metavar="PATH", help="Parquet file to write (replaced whole, never half-written)")
    destination.add_argument("--db", metavar="PATH", help="DuckDB file to write the table --table into")
    classes.add_argument("--table", default="classes",
                         help="table name in --db, read by `run --classes table:NAME` (default classes)")
    classes.set_defaults(handler=_classes)

    for sub in (run, demo, report):
        sub.add_argument("--verbose", action="store_true", help="show Prefect's own console logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()
    _prepare_prefect(getattr(args, "verbose", False))  # `classes` runs no flow
    try:
        return args.handler(args)
    except ValueError as error:  # bad input: one line, no traceback
        print(f"pairwise: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"pairwise: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
