"""One registry of choices: the implementations, the CLI and the defaults agree with faceanon.registry."""

from __future__ import annotations

import pytest

from faceanon import registry
from faceanon.cli import build_parser


def test_implementations_are_keyed_by_the_registry_names():
    from faceanon.faces.detection import _DETECTORS
    from faceanon.faces.redaction import REDACTION_METHODS
    from faceanon.schedulers import SCHEDULERS

    assert set(_DETECTORS) == set(registry.DETECTORS)
    assert tuple(REDACTION_METHODS) == registry.REDACTION_METHODS
    from faceanon.faces.redaction import REDACTORS

    assert tuple(REDACTORS) == registry.REDACTION_METHODS
    assert tuple(SCHEDULERS) == registry.SCHEDULERS


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return parser, action.choices


@pytest.mark.parametrize("name", sorted(_subcommands()[1]))
def test_every_subcommand_has_a_help_text(name, capsys):
    parser, commands = _subcommands()
    help_lines = {
        a.dest: a.help for a in next(a for a in parser._actions if a.dest == "command")._choices_actions
    }
    assert help_lines.get(name), f"`faceanon --help` shows no summary for {name}"
    if name == "serve":  # its options are the app's own (`faceanon serve --help` starts the app's parser)
        return
    with pytest.raises(SystemExit) as exit_info:
        commands[name].parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: faceanon {name}") and len(text.splitlines()) > 3


def test_cli_defaults_come_from_the_registry():
    args = build_parser().parse_args(["anonymize", "x.jpg", "-o", "out"])
    defaults = registry.DEFAULTS
    assert (args.degree, args.seed, args.steps, args.guidance) == (
        defaults.degree,
        defaults.seed,
        defaults.steps,
        defaults.guidance,
    )
    assert args.detector == defaults.detector and args.min_face == defaults.min_face_size
