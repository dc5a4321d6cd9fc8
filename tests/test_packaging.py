"""The installed package list in setup.cfg matches the tree; the CLI lists its commands."""

import configparser
from pathlib import Path

from ptolemy_core.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = set()
    for top in ("ptolemy_core", "ptolemy_leginon"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    found.add("ptolemy_core.weights")
    assert found == listed


def test_help_lists_every_subcommand(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name, _, _ in COMMANDS:
        assert name in out
