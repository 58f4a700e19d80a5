"""rrnet-synth: argument errors are one line and exit 2; a run writes a usable data set."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import rrnet.synth.dataset as dataset_module
from rrnet.cli.synth import main
from rrnet.synth.dataset import LABELS, Source


def analytic_source() -> Source:
    wave = np.concatenate([np.arange(4955.0, 5341.0, 0.02), np.arange(6326.0, 6712.0, 0.02)])
    flux = 1.0 - 0.3 * np.exp(-0.5 * ((wave % 3.7 - 1.85) / 0.1) ** 2)
    labels = pl.DataFrame({"star_id": ["a", "b"], **{c: [1.0, 2.0] for c in LABELS}})
    return Source(wave, labels, spectrum=lambda i: flux * (1.0 - 0.01 * i), name="analytic")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stars", "0", "--out", "x"], "--stars must be >= 1"),
        (["--stars", "2", "--out", "x", "--snr-range", "50", "10"], "--snr-range"),
        (["--stars", "2", "--out", "x", "--snr-range", "0", "10"], "--snr-range"),
        (["--stars", "2", "--out", "x", "--exposures", "3-1"], "--exposures"),
        (["--stars", "2", "--out", "x", "--exposures", "0"], "--exposures"),
        (["--stars", "2", "--out", "x", "--workers", "0"], "--workers"),
        (["--stars", "2", "--out", "x", "--rv-jitter", "-1"], "--rv-jitter"),
        (["--stars", "2", "--out", "x", "--rv-jitter", "nan"], "--rv-jitter"),
        (["--stars", "2", "--out", "x", "--rv-jitter", "inf"], "--rv-jitter"),
        (["--stars", "2", "--out", "x", "--rv-jitter", "3e5"], "--rv-jitter"),  # had reached -c
    ],
)
def test_unusable_arguments(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rrnet-synth: error: ") and message in err[-1]
    assert not (tmp_path / "x").exists()


def test_argparse_errors_return_2(capsys):
    assert main(["--stars", "two", "--out", "x"]) == 2
    assert "rrnet-synth: error:" in capsys.readouterr().err
    assert main(["--exposures", "a-b", "--stars", "1", "--out", "x"]) == 2


def test_unknown_source_is_an_error(capsys, tmp_path, monkeypatch):
    def refuse(source, seed=0, n_stars=0):
        raise ImportError("cannot import name 'load_library' from 'rrnet.synth'")

    monkeypatch.setattr(dataset_module, "resolve_source", refuse)
    assert main(["--stars", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "rrnet-synth: error: cannot import name 'load_library' from 'rrnet.synth'"


def test_run_writes_files_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        dataset_module, "resolve_source", lambda source, seed=0, n_stars=0: analytic_source()
    )
    out = tmp_path / "demo"
    argv = ["--stars", "3", "--out", str(out), "--exposures", "2", "--seed", "4", "--workers", "1"]
    assert main(argv) == 0
    cat = pl.read_csv(out / "catalogue.csv")
    assert cat.height == 3 * 3  # coadd + 2 exposures per visit
    assert len(list((out / "data").glob("med-*.fits.gz"))) == 3
    assert "3 visits" in capsys.readouterr().err
    stamp = {p: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    assert main(argv) == 0  # complete: nothing is rewritten
    assert {p: p.stat().st_mtime_ns for p in (out / "data").iterdir()} == stamp
    assert "already done" in capsys.readouterr().err
    assert main([*argv[:-4], "--seed", "5"]) == 2  # other settings in the same directory
    assert "other settings" in capsys.readouterr().err


def test_rv_jitter_moves_each_exposure_and_truth_says_by_how_much(tmp_path, monkeypatch):
    """--rv-jitter (binaries) was only in the Python settings. Oracle: truth.csv's own
    RVs: equal to the coadd's without jitter, scattered by about the jitter with it."""
    monkeypatch.setattr(
        dataset_module, "resolve_source", lambda source, seed=0, n_stars=0: analytic_source()
    )
    spreads = {}
    for jitter in (0.0, 10.0):
        out = tmp_path / f"j{jitter:g}"
        argv = ["--stars", "6", "--out", str(out), "--exposures", "4", "--workers", "1",
                "--rv-jitter", f"{jitter:g}", "--quiet"]  # fmt: skip
        assert main(argv) == 0
        truth = pl.read_csv(out / "truth.csv")
        rv = truth.columns[[c.startswith("rv") for c in truth.columns].index(True)]
        coadd = truth.filter(pl.col("extname_blue") == "COADD_B").select("filename", rv)
        exp = truth.filter(pl.col("extname_blue") != "COADD_B").join(coadd, on="filename")
        spreads[jitter] = (exp[rv] - exp[f"{rv}_right"]).to_numpy()
        # the coadd's own RV: its exposures' mean (it had been the visit's draw)
        means = exp.group_by("filename").agg(pl.col(rv).mean(), pl.col(f"{rv}_right").first())
        np.testing.assert_allclose(means[rv], means[f"{rv}_right"], atol=1e-9)
    assert (spreads[0.0] == 0).all()
    assert 4.0 < np.std(spreads[10.0]) < 20.0  # 24 exposures about their coadd's
