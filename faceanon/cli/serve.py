"""`faceanon serve`: the web app (its options are the app's own)."""

from __future__ import annotations


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the web app",
        add_help=False,
        description="Start faceanon's web app; options are the app's own (`faceanon serve --help`).",
    )
    parser.set_defaults(run=run_serve)


def run_serve(args) -> int:
    from faceanon.cli.common import error

    try:
        from faceanon.webapp import main as serve
    except ImportError as missing:
        error(
            f"the web app is not available ({missing}). Install faceanon with its app dependencies "
            "(pip install -r requirements.txt)."
        )
        return 1
    return int(serve(args.extra) or 0)
