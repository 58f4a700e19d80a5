"""Every command's --help: complete (each option explained), plain text, and fast.

Fast means the heavy modules (torch, matplotlib) are imported only after parsing
(about 0.5 s on a quiet machine, 6-9 s before); the bound is on CPU time and generous
because test machines are shared.
"""

from __future__ import annotations

import argparse
import importlib
import re
import resource
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PARSERS = [
    ("preprocess", "build_parser"),
    ("infer", "build_parser"),
    ("train", "build_parser"),
    ("eval", "build_parser"),
    ("eval", "build_compare_parser"),
    ("eval", "build_overview_parser"),
    ("import_original", "build_parser"),
    ("run", "build_parser"),
    ("synth", "build_parser"),
]
COMMANDS = [
    ["preprocess"], ["infer"], ["train"], ["eval"], ["eval", "compare"], ["eval", "overview"],
    ["import_original"], ["run"], ["synth"],
]  # fmt: skip


def _parser(module: str, builder: str) -> argparse.ArgumentParser:
    return getattr(importlib.import_module(f"rrnet.cli.{module}"), builder)()


@pytest.mark.parametrize(("module", "builder"), PARSERS)
def test_every_option_has_help_and_the_description_is_plain(module: str, builder: str) -> None:
    parser = _parser(module, builder)
    missing = [
        a.option_strings or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert missing == []
    assert parser.description and "``" not in parser.description
    text = parser.format_help()
    assert not re.search(r"``|:func:|:class:", text)


@pytest.mark.parametrize(("module", "builder"), PARSERS)
def test_catalogue_inputs_name_every_format(module: str, builder: str) -> None:
    for action in _parser(module, builder)._actions:
        if (
            action.dest in ("catalog",)
            and "catalogue" in (action.help or "")
            and "input" in (action.help or "")
        ):
            assert "FITS" in action.help and "Parquet" in action.help


def test_workers_say_what_they_are() -> None:
    for module in ("preprocess", "infer", "synth"):
        action = next(a for a in _parser(module, "build_parser")._actions if a.dest == "workers")
        assert re.search(r"threads|processes", action.help)
    preprocess = next(
        a for a in _parser("preprocess", "build_parser")._actions if a.dest == "workers"
    )
    infer = next(a for a in _parser("infer", "build_parser")._actions if a.dest == "workers")
    assert "threads" in preprocess.help and "threads" in infer.help  # the same readers


def test_preprocess_help_says_how_much_disk_a_store_takes() -> None:
    text = _parser("preprocess", "build_parser").format_help()
    assert "kB per spectrum" in text and "--no-keep-resampled" in text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_help_is_fast_and_imports_no_torch(command: list[str]) -> None:
    code = (
        "import sys, time\n"
        f"from rrnet.cli.{command[0]} import main\n"
        "try:\n"
        f"    main({command[1:]!r} + ['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('HEAVY', [m for m in ('torch', 'matplotlib') if m in sys.modules])\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds, not wall time: a loaded test machine stretches wall time many-fold.
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert elapsed < 4.0, f"--help took {elapsed:.1f} CPU s"  # torch alone takes more


PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
SCRIPTS = list(PYPROJECT["project"]["scripts"].items())


@pytest.mark.parametrize(("name", "target"), SCRIPTS, ids=[n for n, _ in SCRIPTS])
def test_every_console_script_says_its_version(
    name: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rrnet-X --version`` prints the installed distribution's version (what a survey
    pipeline records beside the files it made) and exits 0, as do sub-commands."""
    from importlib.metadata import version

    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    sub = {"rrnet-catalog": ["scan"], "rrnet-eval": ["compare"]}.get(name, [])
    for argv in (["--version"], [*sub, "--version"]):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's own exit, where main lets it through
            status = exc.code
        assert status in (0, None)
        printed = capsys.readouterr().out.strip()
        assert printed == " ".join([name, *argv[:-1], version("rrnet")])
