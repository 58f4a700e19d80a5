"""rrnet-catalog end to end: official-layout catalogues (hand-made for the real file and
written by rrnet-synth) -> rrnet rows -> rrnet-preprocess; scan of synthesised files;
summaries, one-line errors and exit codes."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import polars as pl
import pytest

from helpers import REAL_FILE, SPECTRA, library, official_catalogue
from rrnet.cli._args import EXIT_NO_USABLE_ROWS
from rrnet.cli.catalog import main
from rrnet.cli.preprocess import main as preprocess_main
from rrnet.store import open_store
from rrnet.synth.dataset import make_dataset
from rrnet.synth.lamost_writer import LAMOST_CATALOGUE_NAME, RV_MISSING_FRACTION


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return make_dataset(
        24,
        out,
        snr_range=(15, 120),
        exposures=(1, 3),
        seed=5,
        source=library(),
        workers=1,
        progress=False,
    )


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_real_file_official_catalogue_to_store(tmp_path, capsys):
    """Official layout -> rrnet-catalog -> rrnet-preprocess, file found in a sub-folder."""
    (tmp_path / "medfits" / "20170928").mkdir(parents=True)
    shutil.copy(REAL_FILE, tmp_path / "medfits" / "20170928" / REAL_FILE.name)
    lamost = tmp_path / "mrs.csv"
    official_catalogue().write_csv(lamost, separator="|")
    rr = tmp_path / "rrnet.csv"
    assert main(["from-lamost", str(lamost), "--out", str(rr), "--spectra", "all"]) == 0
    err = _err_lines(capsys)
    assert err[0] == f"rrnet-catalog: 5 rows -> {rr}" and err[1] == "  ok: 5"
    table = pl.read_csv(rr)
    assert list(zip(table["extname_blue"], table["extname_red"], strict=True)) == SPECTRA
    store_dir = tmp_path / "store"
    args = [str(rr), "--data-dir", str(tmp_path / "medfits"), "--out", str(store_dir)]
    # without --find-files the file is not where the catalogue says: a one-line failure
    assert preprocess_main([*args, "--quiet"]) == EXIT_NO_USABLE_ROWS
    assert "missing" in _err_lines(capsys)[-1]
    assert preprocess_main([*args, "--find-files", "--overwrite", "--quiet"]) == 0
    manifest = open_store(store_dir).manifest
    assert manifest["status"].to_list() == ["ok"] * 5
    assert manifest["rv"].to_list() == [-20.0, -21.0, -22.0, -23.0, -24.0]
    assert manifest["rv_source"].to_list() == ["rv_br1"] * 5


def test_a_file_found_as_plain_fits_beside_the_catalogue_is_not_said_to_be_in_a_sub_folder(
    tmp_path, capsys
):
    (tmp_path / REAL_FILE.name.removesuffix(".gz")).write_bytes(
        gzip.decompress(REAL_FILE.read_bytes())
    )
    lamost = tmp_path / "mrs.parquet"
    official_catalogue().write_parquet(lamost)
    rr = tmp_path / "rrnet.parquet"
    assert main(["--quiet", "from-lamost", str(lamost), "--out", str(rr)]) == 0
    out = tmp_path / "store"
    assert preprocess_main([str(rr), "--out", str(out), "--find-files"]) == 0
    (line,) = [x for x in _err_lines(capsys) if "found under" in x]
    assert "sub-folder, or with or without .gz" in line and line.split()[1] == "1"


def test_data_dir_defaults_to_the_catalogues_folder(tmp_path, capsys):
    shutil.copy(REAL_FILE, tmp_path / REAL_FILE.name)
    lamost = tmp_path / "mrs.parquet"
    official_catalogue().write_parquet(lamost)
    rr = tmp_path / "rrnet.parquet"
    assert main(["--quiet", "from-lamost", str(lamost), "--out", str(rr)]) == 0
    assert preprocess_main([str(rr), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    manifest = open_store(tmp_path / "s").manifest
    assert manifest["status"].to_list() == ["ok"]
    assert manifest["extname_blue"].to_list() == ["COADD_B"]


def test_synth_official_catalogue_gives_the_synth_rows(synth, tmp_path, capsys):
    lamost = synth.root / LAMOST_CATALOGUE_NAME
    rr = tmp_path / "rr.parquet"
    assert main(["from-lamost", str(lamost), "--out", str(rr), "--spectra", "all"]) == 0
    got = pl.read_parquet(rr)
    want = pl.read_csv(synth.catalogue)
    cols = ["filename", "extname_blue", "extname_red", "obsid"]
    assert got.select(cols).equals(want.select(cols))  # every spectrum, in input order
    assert got["gp_id"].to_list() == want["star_id"].to_list()
    ok = got["catalog_status"] == "ok"
    np.testing.assert_array_equal(got.filter(ok)["rv"], want.filter(ok)["rv"])
    assert set(got["catalog_status"]) <= {"ok", "no_rv"}
    n_missing = int((~ok).sum())
    assert n_missing <= max(3, 4 * RV_MISSING_FRACTION * got.height)
    assert got.filter(~ok)["rv"].null_count() == n_missing
    # the raw file of the official catalogue has one B and one R row per spectrum
    raw = pl.read_csv(lamost)
    assert raw.height == 2 * want.height
    assert raw.filter(pl.col("rv_br1") == -9999).height == 2 * n_missing
    err = _err_lines(capsys)
    assert f"  ok: {int(ok.sum())}" in err
    if n_missing:
        assert any(line.startswith(f"  no_rv: {n_missing} (e.g. no usable RV") for line in err)
    coadd = tmp_path / "coadd.csv"
    assert main(["--quiet", "from-lamost", str(lamost), "--out", str(coadd)]) == 0
    assert pl.read_csv(coadd)["extname_blue"].unique().to_list() == ["COADD_B"]
    before = coadd.read_bytes()
    # an existing output is refused in one line and left as it was; --overwrite replaces it
    assert main(["from-lamost", str(lamost), "--out", str(coadd), "--spectra", "all"]) == 2
    assert _err_lines(capsys) == [
        f"rrnet-catalog: error: {coadd} exists: give --overwrite to replace it"
    ]
    assert coadd.read_bytes() == before
    assert main(["from-lamost", str(lamost), "--out", str(coadd), "--quiet", "--overwrite"]) == 0
    assert capsys.readouterr().err == ""
    # --overwrite never replaces the catalogue the run reads
    source = lamost.read_bytes()
    assert main(["from-lamost", str(lamost), "--out", str(lamost), "--overwrite"]) == 2
    assert "is an input of this run" in _err_lines(capsys)[0] and lamost.read_bytes() == source


def test_scan_finds_every_synthesised_spectrum(synth, tmp_path):
    rr = tmp_path / "scan.csv"
    lamost = synth.root / LAMOST_CATALOGUE_NAME
    assert (
        main(["--quiet", "scan", str(synth.data_dir), "--out", str(rr), "--rv-from", str(lamost)])
        == 0
    )
    got = pl.read_csv(rr)
    want = pl.read_csv(synth.catalogue)
    key = ["filename", "extname_blue", "extname_red"]
    assert got.select(key).sort(key).equals(want.select(key).sort(key))
    merged = got.join(want.select(*key, pl.col("rv").alias("rv_want")), on=key)
    ok = merged.filter(pl.col("catalog_status") == "ok")
    np.testing.assert_array_equal(ok["rv"], ok["rv_want"])
    by_obsid = tmp_path / "rv.csv"
    want.select("obsid", "rv").unique("obsid").write_csv(by_obsid)
    assert (
        main(
            [
                "--quiet",
                "scan",
                str(synth.data_dir),
                "--out",
                str(rr),
                "--rv-from",
                str(by_obsid),
                "--overwrite",
            ]
        )
        == 0
    )
    assert (pl.read_csv(rr)["catalog_status"] == "ok").all()


def test_unknown_schema_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "other.csv"
    pl.DataFrame({"obsid": [1], "ra": [1.0], "rv": [3.0]}).write_csv(path)
    assert main(["from-lamost", str(path), "--out", str(tmp_path / "o.csv")]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1
    assert err[0].startswith("rrnet-catalog: error: not a LAMOST MRS general catalogue")
    assert "lmjd" in err[0] and "band" in err[0] and "rv_br1" in err[0]
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give a command"),
        (["bogus"], "invalid choice"),
        (["from-lamost", "nowhere.csv", "--out", "o.csv"], "catalogue not found"),
        (["scan", "nowhere", "--out", "o.csv"], "not a directory"),
        (["scan", ".", "--out", "o.txt"], "unknown table format"),
        (["scan", ".", "--out", "o.ecsv"], "writes .csv, .parquet or .fits"),
        (["from-lamost", "x.csv"], "--out"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("rrnet-catalog: error: ") and needle in err[0]


def test_no_usable_row_is_one_line_and_non_zero(tmp_path, capsys):
    lamost = tmp_path / "mrs.csv"
    official_catalogue().with_columns(rv_br1=pl.lit(-9999.0), rv_br0=pl.lit(-9999.0)).write_csv(
        lamost
    )
    rr = tmp_path / "rr.csv"
    assert (
        main(["from-lamost", str(lamost), "--out", str(rr), "--rv", "rv_br1,rv_br0"])
        == EXIT_NO_USABLE_ROWS
    )
    err = _err_lines(capsys)
    assert len(err) == 1 and "no usable row among 1" in err[0] and "-9999" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["scan", str(tmp_path / "empty"), "--out", str(tmp_path / "s.csv")]) == 3
    assert "no spectra found" in _err_lines(capsys)[0]


def test_spectra_left_out_by_the_choice_are_counted(tmp_path, capsys):
    lamost = tmp_path / "mrs.csv"
    official_catalogue().write_csv(lamost)
    rr = tmp_path / "rr.csv"
    assert main(["from-lamost", str(lamost), "--out", str(rr), "--spectra", "coadd"]) == 0
    err = _err_lines(capsys)
    assert (
        err[-1]
        == "  (4 single exposures left out by --spectra coadd (--spectra all keeps every one))"
    )
    exposures_only = tmp_path / "td.csv"
    official_catalogue().filter(pl.col("coadd") == 0).write_csv(exposures_only)
    args = ["from-lamost", str(exposures_only), "--out", str(tmp_path / "td-rr.csv")]
    assert main([*args, "--spectra", "coadd"]) == EXIT_NO_USABLE_ROWS  # nothing chosen: why
    assert "4 single exposures left out by --spectra coadd" in _err_lines(capsys)[0]
    assert main(args) == 0  # the default takes a file's exposures when it lists no coadd
    assert pl.read_csv(tmp_path / "td-rr.csv").height == 4


def test_a_truncated_download_is_one_line_exit_2(tmp_path, capsys):
    lamost = tmp_path / "mrs.csv.gz"
    lamost.write_bytes(gzip.compress(official_catalogue().write_csv().encode())[:150])
    assert main(["from-lamost", str(lamost), "--out", str(tmp_path / "o.csv")]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("rrnet-catalog: error: cannot read")


def test_scan_then_preprocess_keeps_a_damaged_files_reason(tmp_path, capsys):
    """rrnet-preprocess called a file that rrnet-catalog scan found truncated
    'missing_extension: extname_blue is empty'; the scan's status and reason stay."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(REAL_FILE, data / REAL_FILE.name)
    raw = REAL_FILE.read_bytes()
    (data / "med-58025-CUT_sp01-001.fits.gz").write_bytes(raw[: len(raw) // 3])
    rr = tmp_path / "scan.csv"
    assert main(["--quiet", "scan", str(data), "--out", str(rr)]) == 0
    scanned = pl.read_csv(rr)
    cut = scanned.filter(pl.col("filename").str.contains("CUT"))
    assert cut["catalog_status"].to_list() == ["bad_fits"]
    store = tmp_path / "store"
    assert preprocess_main([str(rr), "--data-dir", str(data), "--out", str(store), "--quiet"]) == 0
    m = open_store(store).manifest.filter(pl.col("filename").str.contains("CUT"))
    assert m["status"].to_list() == ["bad_fits"]
    assert m["reason"].to_list() == cut["catalog_reason"].to_list()


def test_astropy_reads_the_scan_table_and_the_store_manifest(tmp_path):
    """Both hold null text (a damaged file's extension names, ok rows' reasons); astropy's
    Parquet reader failed on them ('NoneType has no len()') without the string widths
    rrnet now writes (as the labels catalogue always had). Values as polars reads them."""
    from astropy.table import Table

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(REAL_FILE, data / REAL_FILE.name)
    (data / "med-58025-CUT_sp01-001.fits.gz").write_bytes(REAL_FILE.read_bytes()[:5000])
    rr = tmp_path / "scan.parquet"
    assert main(["--quiet", "scan", str(data), "--out", str(rr)]) == 0
    store = tmp_path / "store"
    assert preprocess_main([str(rr), "--data-dir", str(data), "--out", str(store), "--quiet"]) == 0
    for path in (rr, store / "manifest.parquet"):
        want = pl.read_parquet(path)
        got = Table.read(path)
        text = [n for n, t in want.schema.items() if t == pl.Utf8 and want[n].null_count()]
        assert "extname_blue" in text  # the damaged file's
        for name in text:
            assert [str(v) for v in got[name]] == [str(v) for v in want[name].to_list()], name


@pytest.mark.parametrize("problem", ["missing", "a file", "read-only"])
def test_an_unusable_tmpdir_stops_the_run_in_one_line(tmp_path, monkeypatch, capsys, problem):
    """Python's tempfile fell back to /tmp without a word when TMPDIR did not exist or
    could not be written: DR7's inflated catalogue (tens of GB) on a disk the user did
    not choose. Now one line naming TMPDIR, exit 1 (the setting, not the data), no output."""
    import os

    if problem == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    lamost = tmp_path / "mrs.csv.gz"
    lamost.write_bytes(gzip.compress(official_catalogue().write_csv(separator="|").encode()))
    scratch = tmp_path / "scratch"
    if problem == "read-only":
        scratch.mkdir(mode=0o500)
    elif problem == "a file":
        scratch.write_text("not a folder")
    monkeypatch.setenv("TMPDIR", str(scratch))
    out = tmp_path / "out.parquet"
    assert main(["from-lamost", str(lamost), "--out", str(out)]) == 1
    err = _err_lines(capsys)
    assert len(err) == 1 and f"TMPDIR={scratch}" in err[0], err
    assert not out.exists()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert main(["--quiet", "from-lamost", str(lamost), "--out", str(out)]) == 0


def test_a_commands_warnings_say_warning_in_a_batch_log(tmp_path):
    """rrnet-infer's and rrnet-run's warnings had read like progress lines (``PROG:
    message``: ``grep -i warning`` on a log found none), rrnet-preprocess's, rrnet-catalog's
    and rrnet-eval's came without the command's name. Here the warning that an obsid names
    a whole file, from the command itself (a fresh process: logging as it configures it)."""
    import subprocess
    import sys

    from helpers import real_header

    (tmp_path / "d").mkdir()
    shutil.copy(REAL_FILE, tmp_path / "d" / REAL_FILE.name)
    table = tmp_path / "rv.csv"
    pl.DataFrame({"obsid": [real_header()["OBSID"]], "rv": [-20.0]}).write_csv(table)
    code = "import sys; from rrnet.cli.catalog import main; sys.exit(main(sys.argv[1:]))"
    argv = ["scan", str(tmp_path / "d"), "--out", str(tmp_path / "c.csv"), "--rv-from",
            str(table), "--quiet"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(
        ln.startswith("rrnet-catalog: warning: 1 file(s) hold several spectra") for ln in lines
    ), lines
