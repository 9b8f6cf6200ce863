"""The `faceanon` command line.

    faceanon anonymize PATH... -o OUT [--degree 1.25 --seed 0 --steps 25 --method diffusion ...]
    faceanon swap SOURCE TARGET -o OUT
    faceanon detect PATH... [--json]
    faceanon download
    faceanon serve [app options]
    faceanon evaluate FOLDER -o OUT
    faceanon verify PATH...

Each subcommand is a module of this package with one `add_<name>(subparsers)` function that
declares its options and sets `run=<function(args) -> exit code>`; register it in SUBCOMMANDS.
Shared flags live in cli/common.py, their defaults in faceanon.registry. Exit codes: 0 success,
1 some input failed (the others were still processed), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from faceanon import __version__
from faceanon.cli.anonymize import add_anonymize
from faceanon.cli.common import error
from faceanon.cli.detect import add_detect
from faceanon.cli.download import add_download
from faceanon.cli.evaluate import add_evaluate
from faceanon.cli.serve import add_serve
from faceanon.cli.swap import add_swap
from faceanon.cli.verify import add_verify
from faceanon.errors import FaceAnonError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    run = getattr(args, "run", None)
    if not run:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except FaceAnonError as problem:
        error(str(problem))
        return 1
    except KeyboardInterrupt:
        error("interrupted.")
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceanon",
        description="Give every face in a photo a new identity (Face Anonymization Made Simple).",
    )
    parser.add_argument("--version", action="version", version=f"faceanon {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


SUBCOMMANDS = [add_anonymize, add_swap, add_detect, add_download, add_serve, add_evaluate, add_verify]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
