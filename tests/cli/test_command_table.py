"""The command line imports only the module of the command it runs; the table saying which is checked here."""

import argparse
import importlib
import subprocess
import sys

from neuralcodes.cli import COMMAND_MODULES, COMMANDS, build_parser


def registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"neuralcodes.cli.{module}").add_parser(sub)
    return set(sub.choices)


def test_the_command_table_names_every_command_and_its_module():
    by_module = {module: registered(module) for module in COMMAND_MODULES}
    assert {
        command: module for module, commands in by_module.items() for command in commands
    } == COMMANDS
    full = (
        build_parser([])._subparsers._group_actions[0].choices
    )  # help and unknown commands: everything
    assert set(full) == set(COMMANDS)
    only = build_parser(["status", "x"])._subparsers._group_actions[0].choices
    assert set(only) == {"status", "clean"}


def test_status_starts_without_torch(tmp_path):
    # A user polls `neuralcodes status` while a run trains: it must not pay for importing torch (~2 s here).
    code = (
        "import sys; from neuralcodes.cli import main; main(['status', sys.argv[1]]); "
        "print('torch' in sys.modules, 'pytorch_metric_learning' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False"], out.stderr
