"""`faceanon anonymize SRC... -o OUT --ray [ADDRESS]`: the same command over a dataset, on Ray Data.

Only the flags live here; faceanon.dataset does the work (imported when --ray is given, so the
CLI's --help stays fast and works without Ray installed).
"""

from __future__ import annotations

import argparse


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "datasets (--ray)",
        "Run on Ray Data: folders, globs or Parquet files in; the same tree of outputs, or "
        "OUT.parquet, out; resumable; an audit table in OUT/_faceanon/.",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run as a Ray Data job: no ADDRESS starts a local Ray instance; 'auto' or "
        "ray://HOST:10001 uses an existing cluster (put --ray after the paths, or write "
        "--ray=ADDRESS)",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker actors (default: one per GPU of the cluster, or 1)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="G",
        help="GPUs each worker holds (default: 1 when the cluster has GPUs, else 0)",
    )
    group.add_argument(
        "--images-per-batch",
        type=int,
        default=16,
        metavar="N",
        help="photos a worker takes at once, and one audit part per batch (default: 16)",
    )
    group.add_argument(
        "--image-column",
        default=None,
        metavar="NAME",
        help="Parquet sources: the column of encoded image bytes (default: image, bytes, ...)",
    )
    group.add_argument(
        "--key-column",
        default=None,
        metavar="NAME",
        help="Parquet sources: a column naming each row's output (default: the image struct's "
        "path, else a hash of the bytes)",
    )


def run_dataset(args) -> int:
    import sys

    from faceanon.cli.common import say
    from faceanon.dataset import anonymize_dataset
    from faceanon.dataset.runner import dataset_settings

    known = dataset_settings({})
    options = {k: v for k, v in vars(args).items() if k in known and k != "ray"}
    address = None if args.ray == "local" else args.ray

    def on_file(row: dict) -> None:
        if row["status"] in ("error", "redacted"):
            say(args, f"{row['file']}: {row['status']}: {row['error']}", always=True)

    if not args.quiet:
        say(
            args,
            f"faceanon: {len(args.paths)} source(s) -> {args.output} on Ray "
            f"({address or 'a local instance'}); progress below.",
        )
    result = anonymize_dataset([str(p) for p in args.paths], args.output, address, on_file=on_file, **options)
    _report(args, result)
    say(args, result.summary(), always=True)
    if result.failed:
        print(
            f"faceanon: error: {result.failed} item(s) could not be processed; see the audit.",
            file=sys.stderr,
        )
    return 1 if result.failed else 0


def _report(args, result) -> None:
    import json

    from faceanon.media.atomic import write_text_atomic

    summary = {
        name: getattr(result, name)
        for name in (
            "done",
            "redacted",
            "failed",
            "skipped",
            "already_done",
            "faces",
            "changed",
            "seconds",
            "errors",
        )
    }
    summary["audit"] = str(result.audit)
    if args.report:
        write_text_atomic(args.report, json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
