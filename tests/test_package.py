"""The package's top level: light to import, and every advertised entry point resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rrnet


def test_import_is_light() -> None:
    code = "import sys, rrnet; print('torch' in sys.modules, 'polars' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_models_and_training_import_without_polars_or_fitsio() -> None:
    """The GPU scripts (benchmarks/gpu_*.py, tests/models/test_cuda.py) run on bare GPU
    machines that have torch but neither polars nor fitsio: the network, ensemble and
    training code must import without them."""
    code = (
        "import sys\n"
        "for name in ('polars', 'fitsio', 'astropy'): sys.modules[name] = None\n"
        "import rrnet.models.ensemble, rrnet.training.loop\n"
        "from rrnet.training import Split, TrainSettings, train_arrays\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


@pytest.mark.parametrize("name", [n for n in rrnet.__all__ if n != "__version__"])
def test_lazy_entry_points_resolve(name: str) -> None:
    assert callable(getattr(rrnet, name))


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = rrnet.no_such_thing


def test_version_matches_metadata() -> None:
    from importlib.metadata import version

    assert rrnet.__version__ == version("rrnet")


def test_citation_file_names_this_version_and_the_paper() -> None:
    """CITATION.cff (what GitHub's "Cite this repository" and Zenodo read) follows the
    package's version, and its preferred citation is the RRNet paper."""
    import tomllib
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    cff = yaml.safe_load((root / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == project["version"]
    paper = cff["preferred-citation"]
    assert (paper["journal"], paper["volume"], paper["start"], paper["year"]) == (
        "The Astrophysical Journal Supplement Series",
        261,
        36,
        2022,
    )
    assert [a["family-names"] for a in paper["authors"]] == ["Xiong", "Li", "Liao"]


@pytest.mark.parametrize(
    ("module", "prog"),
    [
        ("preprocess", "rrnet-preprocess"),
        ("train", "rrnet-train"),
        ("infer", "rrnet-infer"),
        ("synth", "rrnet-synth"),
        ("eval", "rrnet-eval"),
        ("import_original", "rrnet-import-original"),
        ("run", "rrnet-run"),
    ],
)
def test_every_command_reports_an_unknown_option_in_one_line(module, prog, capsys) -> None:
    from importlib import import_module

    main = import_module(f"rrnet.cli.{module}").main
    assert main(["--no-such-option"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: ")


def test_dir_lists_the_entry_points() -> None:
    names = dir(rrnet)
    for name in ("open_store", "infer", "Ensemble", "preprocess_catalog", "train_ensemble"):
        assert name in names
    for name in ("read_catalogue", "evaluate", "overview"):
        assert name in names and callable(getattr(rrnet, name))


def test_return_types_are_documented() -> None:
    doc = rrnet.__doc__ or ""
    assert "read_catalogue(path) -> (polars.DataFrame, dict)" in doc
    assert "infer(" in doc and "-> polars.DataFrame" in doc


INTERRUPTED_FIRST_CALL = """
import os, signal, sys
import rrnet

if sys.argv[1] == "ignored":  # a batch wrapper that ignores Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_IGN)

class CtrlC:  # presses Ctrl-C while torch's own modules are being imported
    fired = False
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torch.nn") and not CtrlC.fired:
            CtrlC.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
try:
    rrnet.Ensemble
    print("ignored")
except KeyboardInterrupt:
    print("interrupted")
import torch
print(float(torch.ones(2).sum()), rrnet.Ensemble.__name__)
"""


@pytest.mark.parametrize("handler", ["default", "ignored"])
def test_ctrl_c_during_the_first_torch_import_leaves_torch_usable(handler: str) -> None:
    """Interrupted half-way, torch refuses every later import in the process ("can only
    be initialized once per process"): a notebook user who stopped a first call's silent
    seconds had to restart the kernel. The interrupt now lands once torch is whole, with
    the handler that was there (a process ignoring Ctrl-C still ignores it)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_FIRST_CALL, handler], capture_output=True, text=True
    )
    first = "interrupted" if handler == "default" else "ignored"
    assert run.stdout.split() == [first, "2.0", "Ensemble"], run.stdout + run.stderr
