"""rrnet-preprocess end to end: the real file against the original method's path, argument
errors, --select, progress lines, and kill -9 + --resume giving an identical store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
from astropy.io import fits as afits
from scipy.interpolate import interp1d

from helpers import REAL_FILE, SPECTRA, needs_shared
from rrnet.cli._args import EXIT_NO_USABLE_ROWS
from rrnet.cli.preprocess import main
from rrnet.grid import BLUE_GRID, C_KMS, RED_GRID
from rrnet.preprocess import reference
from rrnet.store import open_store

pytestmark = needs_shared


def original_path(blue: str, red: str, rv: float) -> tuple[np.ndarray, np.ndarray]:
    """The original method: astropy read, RV shift, scipy interp1d, the reference normalisation."""
    arms = []
    with afits.open(REAL_FILE) as hdul:
        for extname, grid in ((blue, BLUE_GRID), (red, RED_GRID)):
            data = hdul[extname].data
            wave = 10 ** data["LOGLAM"].astype(np.float64) / (1 + rv / C_KMS)
            arms.append(interp1d(wave, data["FLUX"].astype(np.float64))(grid))
    resampled = np.concatenate(arms).astype(np.float32)[None]
    return resampled[0], reference.normalize(resampled)[0]


@pytest.fixture
def real_catalog(tmp_path):
    rows = [(REAL_FILE.name, b, r, -20.0, 1000 + i) for i, (b, r) in enumerate(SPECTRA)]
    path = tmp_path / "catalog.csv"
    pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv", "obsid"], orient="row"
    ).write_csv(path)
    return path


def test_real_spectra_match_the_original_method(real_catalog, tmp_path):
    out = tmp_path / "store"
    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    store = open_store(out)
    assert store.manifest["status"].to_list() == ["ok"] * 5
    assert store.manifest["obsid"].to_list() == [1000, 1001, 1002, 1003, 1004]
    normalized = store.read_flux(range(5))
    resampled = store.read_flux(range(5), kind="resampled")
    for i, (blue, red) in enumerate(SPECTRA):
        want_resampled, want_normalized = original_path(blue, red, -20.0)
        np.testing.assert_allclose(resampled[i], want_resampled, rtol=1e-5)
        assert np.median(np.abs(normalized[i] - want_normalized)) <= 1e-4
        # The header S/N of the named extensions is recorded.
        with afits.open(REAL_FILE) as hdul:
            assert store.manifest["snr_blue"][i] == pytest.approx(hdul[blue].header["SNR"])
            assert store.manifest["snr_red"][i] == pytest.approx(hdul[red].header["SNR"])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rrnet-preprocess: error: ")
    return err[0]


def test_missing_required_columns_exit_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "cat.csv"
    pl.DataFrame({"filename": ["x.fits"], "rv": [1.0]}).write_csv(path)
    code = main([str(path), "--data-dir", str(tmp_path), "--out", str(tmp_path / "s")])
    assert code == 2
    line = _one_error_line(capsys)
    assert "extname_blue" in line and "extname_red" in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--workers", "-1"], "--workers"),
        (["--shard-size", "0"], "--shard-size"),
        (["--bogus"], "unrecognized"),
        (["--resume", "--overwrite"], "exclude"),
        (["--select", "sel.txt"], "unknown table format"),
        (["--max-inflated-mb", "0"], "--max-inflated-mb"),
        (["--max-inflated-mb", "nan"], "--max-inflated-mb"),
        (["--reader", "astropy"], "--reader"),
    ],
)
def test_unusable_arguments_exit_2_with_one_line(real_catalog, tmp_path, capsys, extra, needle):
    args = [str(real_catalog), "--data-dir", str(tmp_path), "--out", str(tmp_path / "s")]
    assert main([*args, *extra]) == 2
    assert needle in _one_error_line(capsys)


def test_missing_catalogue_or_data_dir(real_catalog, tmp_path, capsys):
    assert main([str(tmp_path / "no.csv"), "--data-dir", ".", "--out", str(tmp_path / "s")]) == 2
    assert "catalogue not found" in _one_error_line(capsys)
    args = [str(real_catalog), "--data-dir", str(tmp_path / "nowhere"), "--out", "s"]
    assert main(args) == 2
    assert "--data-dir" in _one_error_line(capsys)


def test_an_output_under_a_file_is_a_usage_error(real_catalog, tmp_path, capsys):
    """--out data/x.fits.gz/store: the arguments' fault, said as such (exit 2); it was "Not
    a directory ... fix the cause and rerun with --resume" (exit 1), as if the disk failed."""
    (tmp_path / "afile").write_text("")
    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "afile" / "deeper" / "store")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in _one_error_line(capsys)


def test_existing_store_needs_resume_or_overwrite(real_catalog, tmp_path, capsys):
    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(tmp_path / "s")]
    assert main([*args, "--quiet"]) == 0
    assert main([*args, "--quiet"]) == 2
    assert "--resume" in _one_error_line(capsys)
    assert main([*args, "--quiet", "--resume"]) == 0
    assert main([*args, "--quiet", "--overwrite", "--no-rv-correction"]) == 0
    assert open_store(tmp_path / "s").fingerprint["correct_rv"] is False


def test_select_writes_the_passing_rows_as_a_catalogue(real_catalog, tmp_path):
    out, sel = tmp_path / "s", tmp_path / "selected.csv"
    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(out)]
    cuts = ["--min-snr", "50", "--max-outliers", "1000"]
    assert main([*args, "--quiet", *cuts, "--select", str(sel)]) == 0
    manifest = open_store(out).manifest
    selected = pl.read_csv(sel)
    assert selected.columns == pl.read_csv(real_catalog).columns
    assert selected["obsid"].to_list() == manifest.filter("quality_ok")["obsid"].to_list()
    assert 0 < selected.height < 5  # the coadd passes S/N >= 50, the exposures do not
    # The selection is a valid input catalogue.
    again = [str(sel), "--data-dir", str(REAL_FILE.parent), "--out", str(tmp_path / "s2")]
    assert main([*again, "--quiet"]) == 0
    assert open_store(tmp_path / "s2").n_rows == selected.height


def test_select_never_replaces_the_catalogue_or_a_users_file(real_catalog, tmp_path, capsys):
    """--select replaced any file, the input catalogue included, without a word."""
    import shutil

    catalog = shutil.copy(real_catalog, tmp_path / "cat.csv")
    before = (tmp_path / "cat.csv").read_bytes()
    args = [str(catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(tmp_path / "s")]
    assert main([*args, "--quiet", "--select", str(catalog)]) == 2
    assert "is the input catalogue" in _one_error_line(capsys)
    mine = tmp_path / "mine.csv"
    mine.write_text("my notes\n")
    assert main([*args, "--quiet", "--select", str(mine)]) == 2
    assert "exists" in _one_error_line(capsys) and mine.read_text() == "my notes\n"
    assert (tmp_path / "cat.csv").read_bytes() == before and not (tmp_path / "s").exists()
    assert main([*args, "--quiet", "--select", str(mine), "--overwrite"]) == 0
    assert main([*args, "--quiet", "--select", str(mine), "--resume"]) == 0  # its own file
    assert pl.read_csv(mine).columns == pl.read_csv(real_catalog).columns


def test_plain_progress_line_when_not_a_terminal(real_catalog, tmp_path, capsys):
    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(tmp_path / "s")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "5/5 spectra (100.0%)" in err and "spectra/s" in err and "ETA" in err
    assert "\r" not in err  # no progress bar redraws in a log file
    # the run ends with a summary: counts, where the store is and what it takes on disk
    assert "rrnet-preprocess: 5 rows in, 5 ok (100%)" in err and "pass the quality cuts" in err
    assert f"store: {tmp_path / 's'}" in err
    shown = re.search(r"disk: ([\d,.]+) (kB|MB), ([\d.]+) kB per row \(float32 flux\)", err)
    assert shown is not None, err
    total = sum(f.stat().st_size for f in (tmp_path / "s").rglob("*") if f.is_file())
    unit = {"kB": 1e3, "MB": 1e6}[shown[2]]
    assert abs(float(shown[1].replace(",", "")) * unit - total) <= 0.05 * unit
    assert abs(float(shown[3]) * 1e3 - total / 5) <= 50


def _big_catalog(tmp_path, n_rows: int) -> tuple:
    """``n_rows`` rows over 20 file names (links to the real file) with varied RV."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(20):
        (data / f"spec-{i:02d}.fits.gz").symlink_to(REAL_FILE)
    rows = [
        (f"spec-{(i // 5) % 20:02d}.fits.gz", *SPECTRA[i % 5], float(30 * np.sin(i)))
        for i in range(n_rows)
    ]
    path = tmp_path / "catalog.parquet"
    pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    ).write_parquet(path)
    return path, data


def _files(path):
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "store.json"
    }


def test_kill_9_then_resume_gives_the_uninterrupted_store(tmp_path):
    catalog, data = _big_catalog(tmp_path, 300)
    common = [str(catalog), "--data-dir", str(data), "--shard-size", "5", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rrnet.cli.preprocess", *common, "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "parts").glob("manifest-*.parquet"))) >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "manifest.parquet").exists()
    n_done = len(list((out / "parts").glob("manifest-*.parquet")))
    assert 3 <= n_done < 60

    assert main([*common, "--out", str(out), "--resume"]) == 0
    assert _files(out) == _files(tmp_path / "full")
    assert not list(out.rglob("*.tmp"))


def test_sigterm_says_what_was_kept_and_resume_finishes(tmp_path):
    """A batch system's walltime SIGTERM killed rrnet-preprocess without a word (Ctrl-C
    said what was kept and how to resume). 3,000 rows: with 300 a fast run could end
    before the signal (exit 0, seen once in a CI run)."""
    catalog, data = _big_catalog(tmp_path, 3000)
    common = [str(catalog), "--data-dir", str(data), "--shard-size", "5", "--quiet"]
    out = tmp_path / "terminated"
    cmd = [sys.executable, "-m", "rrnet.cli.preprocess", *common, "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "parts").glob("manifest-*.parquet"))) >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the signal: make the catalogue longer"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "rrnet-preprocess: terminated (SIGTERM); rerun with --resume to continue"
    )
    assert main([*common, "--out", str(out), "--resume"]) == 0


def test_reader_option_and_inflation_limit(real_catalog, tmp_path):
    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "rust")]) == 0
    assert main([*args, "--out", str(tmp_path / "ref"), "--reader", "fitsio"]) == 0
    rust, ref = open_store(tmp_path / "rust"), open_store(tmp_path / "ref")
    assert rust.manifest.drop("reason").equals(ref.manifest.drop("reason"))
    rows = range(rust.n_rows)
    np.testing.assert_array_equal(rust.read_flux(rows), ref.read_flux(rows))
    # every row refused: the store is still written, and the run says so with exit 3
    small = [*args, "--out", str(tmp_path / "small"), "--max-inflated-mb", "0.1"]
    assert main(small) == EXIT_NO_USABLE_ROWS
    statuses = set(open_store(tmp_path / "small").manifest["status"])
    assert statuses == {"too_large"}


def test_the_runs_counts_are_in_summary_json_for_scripts(real_catalog, tmp_path):
    """A workflow manager learnt what a run did only from its human lines (or by reading
    the manifest): ``STORE/summary.json`` now holds the counts, checked here against the
    manifest, for a good run and for one where every row failed (exit 3)."""
    import json

    args = [str(real_catalog), "--data-dir", str(REAL_FILE.parent), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    doc = json.loads((tmp_path / "s" / "summary.json").read_text())
    manifest = open_store(tmp_path / "s").manifest
    assert doc["rows"] == manifest.height == 5 and doc["ok"] == 5 and doc["failed"] == {}
    assert doc["quality_ok"] == int(manifest["quality_ok"].sum())
    small = [*args, "--out", str(tmp_path / "s"), "--max-inflated-mb", "0.1", "--overwrite"]
    assert main(small) == EXIT_NO_USABLE_ROWS
    doc = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert doc["ok"] == 0 and doc["quality_ok"] == 0
    n, example = doc["failed"]["too_large"]
    assert n == 5 and "more than the limit" in example
