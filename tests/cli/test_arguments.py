"""Arguments that make no sense are refused with one line and exit status 2, before any
work and without leaving anything behind."""

from __future__ import annotations

import os

import pytest

from rrnet.cli import infer, preprocess

PREPROCESS_BAD = [
    ("--max-iter", str(10**21)),
    ("--max-iter", "1e21"),
    ("--max-iter", "0"),
    ("--min-snr", "nan"),
    ("--min-snr", "inf"),
    ("--max-outliers", "-5"),
    ("--max-outlier-run", "-1"),
    ("--workers", "-3"),
    ("--shard-size", "0"),
    ("--shard-size", str(10**20)),  # accepted; the store then overflowed its readers
    ("--rv-column", "filename"),  # "unexpected ComputeError: duplicate name"
]


@pytest.mark.parametrize(("flag", "value"), PREPROCESS_BAD)
def test_preprocess_refuses(tmp_path, capsys, flag, value):
    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    out = tmp_path / "store"
    args = [str(catalog), "--data-dir", str(tmp_path), "--out", str(out), flag, value]
    assert preprocess.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rrnet-preprocess: error:")
    assert not out.exists()


@pytest.mark.parametrize("mode", ["measure", "catalog"])
@pytest.mark.parametrize("command", ["rrnet-preprocess", "rrnet-run"])
def test_an_rv_choice_without_rv_correction_is_refused(tmp_path, capsys, command, mode):
    """--rv picks the RV that shifts each spectrum; --no-rv-correction shifts none, and
    the --rv given was ignored without a word."""
    from rrnet.cli import run

    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    out = tmp_path / "out"
    main = {"rrnet-preprocess": preprocess.main, "rrnet-run": run.main}[command]
    extra = [] if command == "rrnet-preprocess" else ["--model", str(tmp_path)]
    argv = [str(catalog), "--out", str(out), "--rv", mode, "--no-rv-correction", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{command}: error: --rv {mode} chooses" in err
    assert not out.exists()


INFER_BAD = [
    ("--min-snr", "nan"),
    ("--ood-quantile", "nan"),
    ("--max-disagreement", "inf"),
    ("--max-disagreement", "-1"),  # flagged every row "members disagree"
    ("--max-disagreement", "0"),
    ("--workers", "-3"),
    ("--batch-size", "-1"),
    ("--chunk-rows", "0"),
]


@pytest.mark.parametrize(("flag", "value"), INFER_BAD)
def test_infer_refuses(tmp_path, capsys, flag, value):
    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    out = tmp_path / "cat.parquet"
    args = ["--catalog", str(catalog), "--data-dir", str(tmp_path), "--model", str(tmp_path)]
    assert infer.main([*args, "--out", str(out), "--no-progress", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rrnet-infer: error:")
    assert flag in err  # refused for this option (not for the model folder, say)
    assert not out.exists() and not (tmp_path / "cat.parquet.parts").exists()


@pytest.mark.parametrize(
    "extra",
    [["--data-dir", "."], ["--workers", "1"], ["--chunk-rows", "5"], ["--rv", "measure"],
     ["--rv", "catalog"], ["--allow-outside-data-dir"], ["--find-files"]],
)  # fmt: skip
def test_infer_refuses_reading_options_a_store_ignores(tmp_path, capsys, extra):
    """A store is read as rrnet-preprocess wrote it: how raw spectra are read (``--rv
    measure``, ``--data-dir``) was silently ignored with --store."""
    out = tmp_path / "cat.parquet"
    args = ["--store", str(tmp_path), "--model", str(tmp_path), "--out", str(out)]
    assert infer.main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {extra[0]} applies to --catalog" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["abc", "-2", "100000"])
def test_a_bad_rrnet_num_threads_is_refused_like_an_argument(tmp_path, capsys, monkeypatch, value):
    """The thread count read from the environment is checked with the arguments: one
    line and exit 2 before any work (it was an "unexpected" failure mid-run)."""
    monkeypatch.setenv("RRNET_NUM_THREADS", value)
    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    for main, prog, args in (
        (preprocess.main, "rrnet-preprocess", [str(catalog), "--data-dir", str(tmp_path)]),
        (infer.main, "rrnet-infer", ["--catalog", str(catalog), "--data-dir", str(tmp_path),
                                     "--model", str(tmp_path), "--no-progress"]),
    ):  # fmt: skip
        out = tmp_path / f"{prog}.out"
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{prog}: error: RRNET_NUM_THREADS")
        assert not out.exists()


def test_header_only_catalogue_same_answer(tmp_path, capsys):
    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\n")
    args = [str(catalog), "--data-dir", str(tmp_path), "--out", str(tmp_path / "s")]
    assert preprocess.main(args) == 2
    pre = capsys.readouterr().err.split("error: ", 1)[1]
    from helpers import make_checkpoint

    model = make_checkpoint(tmp_path / "SP", ("Teff[K]",), members=1, seed=0, preprocessing=None)
    args = ["--catalog", str(catalog), "--data-dir", str(tmp_path), "--model", str(model)]
    assert infer.main([*args, "--out", str(tmp_path / "c.parquet"), "--device", "cpu"]) == 2
    inf = capsys.readouterr().err.split("error: ", 1)[1]
    assert pre == inf
    assert not (tmp_path / "s").exists() and not (tmp_path / "c.parquet.parts").exists()
    pytest.importorskip("distributed")
    from rrnet.cli import run  # it exited 0 with an empty catalogue

    args = [str(catalog), "--data-dir", str(tmp_path), "--model", str(model), "--processes", "1"]
    assert run.main([*args, "--out", str(tmp_path / "r.parquet")]) == 2
    assert capsys.readouterr().err.split("error: ", 1)[1] == pre
    assert not (tmp_path / "r.parquet").exists()


FLOOR_BAD = [
    (["--per-star-out", "stars.parquet"], "add --per-star"),
    (["--per-star", "--error-floor", "teff"], "LABEL=SIGMA"),
    (["--per-star", "--error-floor", "teff=abc"], "LABEL=SIGMA"),
    (["--per-star", "--error-floor", "teff=-1"], "sigma >= 0"),
    (["--per-star", "--error-floor", "teff=nan"], "sigma >= 0"),
    (["--per-star", "--error-floor", "vsini=1"], "unknown label"),
    (["--per-star", "--error-floor", "calibration", "--error-floor", "teff=1"], "combined"),
    (["--per-star", "--error-floor", "none", "--error-floor", "teff=1"], "combined"),
    (["--per-star", "--error-floor", "calibration", "--raw-errors"], "raw-errors"),
    (["--error-floor", "teff=1"], "--per-star"),
]


@pytest.mark.parametrize(("extra", "match"), FLOOR_BAD)
def test_infer_refuses_bad_error_floor(tmp_path, capsys, extra, match):
    from helpers import make_checkpoint

    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv,star_id\nx.fits,B,R,0,s\n")
    model = make_checkpoint(tmp_path / "SP", ("Teff[K]",), members=1, seed=0, preprocessing=None)
    out = tmp_path / "cat.parquet"
    args = ["--catalog", str(catalog), "--data-dir", str(tmp_path), "--model", str(model)]
    assert infer.main([*args, "--out", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rrnet-infer: error:")
    assert match in err
    assert not out.exists() and not (tmp_path / "cat.parquet.parts").exists()


def test_resume_and_overwrite_exclude_each_other_in_every_command(tmp_path, capsys):
    """rrnet-preprocess refused --resume --overwrite; rrnet-infer and rrnet-run ran with
    both (which one wins is a guess): now all three refuse in one line."""
    from rrnet.cli import run

    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    common = ["--data-dir", str(tmp_path), "--model", str(tmp_path), "--resume", "--overwrite"]
    for main, args in (
        (infer.main, ["--catalog", str(catalog), "--out", str(tmp_path / "a.parquet"), *common]),
        (run.main, [str(catalog), "--out", str(tmp_path / "b.parquet"), *common]),
        (preprocess.main, [str(catalog), "--out", str(tmp_path / "s"), "--resume", "--overwrite",
                           "--data-dir", str(tmp_path)]),
    ):  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("not allowed with" in err or "exclude" in err), err


def test_a_full_disk_quoted_by_a_library_is_called_the_machines_fault(capsys):
    """Polars wraps ENOSPC in a ComputeError: it was 'unexpected ComputeError'."""
    import polars as pl

    from rrnet.cli._args import run_errors

    def full() -> int:
        raise pl.exceptions.ComputeError("parquet: No space left on device (os error 28)")

    assert run_errors("rrnet-infer", full) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("rrnet-infer: error: No space left on device") and "--resume" in line
    assert run_errors("rrnet-catalog", full, resumable=False) == 1  # it has no --resume
    line = capsys.readouterr().err.strip()
    assert "No space left on device" in line and "--resume" not in line

    def other() -> int:
        raise pl.exceptions.ComputeError("a bug")

    assert run_errors("rrnet-infer", other) == 1
    assert "unexpected ComputeError: a bug" in capsys.readouterr().err


def test_every_command_turns_an_escaped_error_into_one_line(capsys, monkeypatch) -> None:
    """A path under a folder this user may not enter makes Python's exists()/is_file()
    raise PermissionError in argument checks (tracebacks from rrnet-preprocess, -eval,
    -catalog); every command's main is wrapped so that such an error is one line, exit 2,
    and anything else unexpected one line, exit 1."""
    import errno
    import importlib

    from rrnet.cli._args import command

    monkeypatch.delenv("RRNET_DEBUG", raising=False)
    for name in ("catalog", "eval", "import_original", "infer", "preprocess", "run", "synth",
                 "train"):  # fmt: skip
        main = importlib.import_module(f"rrnet.cli.{name}").main
        assert hasattr(main, "__wrapped__"), name

    @command("rrnet-x")
    def denied() -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/shared/private/cat.csv")

    @command("rrnet-x")
    def broken() -> int:
        raise RuntimeError("something odd\nsecond line")

    assert denied() == 2
    err = capsys.readouterr().err
    assert err.startswith("rrnet-x: error: permission denied: /shared/private/cat.csv (")
    assert err.count("\n") == 1
    assert broken() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: something odd" in err


def test_an_output_this_user_cannot_write_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch
) -> None:
    """An --out in a folder this user may not write (or another user's read-only file)
    failed after the work, told to --resume, which could never succeed; --overwrite
    replaced another user's read-only catalogue. Refused first, one line, exit 2 (checked
    through os.access, which root passes, hence the patch)."""
    import os
    from pathlib import Path

    from rrnet.cli import catalog, synth, train
    from rrnet.cli import eval as evaluate

    shared = tmp_path / "shared"
    shared.mkdir()
    theirs = shared / "theirs.parquet"
    theirs.write_bytes(b"another user's catalogue")
    real_access = os.access
    denied = {shared, theirs}
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) not in denied and real_access(p, mode, **kw)
    )
    cat = tmp_path / "cat.csv"
    cat.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    runs = [
        (preprocess.main, [str(cat), "--out", str(shared / "store")]),
        (preprocess.main, [str(cat), "--out", str(tmp_path / "s"), "--select", str(theirs)]),
        (infer.main, ["--store", str(tmp_path), "--model", str(tmp_path), "--out", str(theirs),
                      "--overwrite", "--no-progress"]),
        (train.main, ["--store", str(tmp_path), "--labels", str(cat), "--out",
                      str(shared / "ckpt")]),
        (catalog.main, ["scan", str(tmp_path), "--out", str(shared / "c.parquet")]),
        (evaluate.main, ["overview", str(cat), "--out", str(shared / "o")]),
        (synth.main, ["--stars", "2", "--out", str(shared / "syn")]),  # was "[Errno 13] ..."
    ]  # fmt: skip
    for main, args in runs:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not writable by this user" in err, (args, err)
    assert theirs.read_bytes() == b"another user's catalogue"
    assert sorted(p.name for p in shared.iterdir()) == ["theirs.parquet"]
    assert not (tmp_path / "s").exists()


def test_an_empty_output_name_is_refused(tmp_path, capsys, monkeypatch):
    """rrnet-run --out "" was an unexpected ValueError ("PosixPath('.') has an empty name")."""
    pytest.importorskip("distributed")
    from rrnet.cli import run

    monkeypatch.chdir(tmp_path)
    catalog = tmp_path / "cat.csv"
    catalog.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    args = [str(catalog), "--data-dir", str(tmp_path), "--model", str(tmp_path), "--out", ""]
    assert run.main(args) == 2
    assert capsys.readouterr().err.strip() == "rrnet-run: error: --out is empty: name the output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.csv"]


@pytest.mark.parametrize("argv", [
    ["rrnet.cli.train", "--store", "s", "--labels", "l", "--out", "o", "--seed", "-1"],
    ["rrnet.cli.train", "--store", "s", "--labels", "l", "--out", "o", "--split-seed", "-3"],
    ["rrnet.cli.synth", "--stars", "1", "--out", "o", "--seed", "-1"],
    ["rrnet.cli.eval", "compare", "--store", "s", "--labels", "l", "--out", "o", "--seed", "x"],
])  # fmt: skip
def test_a_negative_seed_is_refused_naming_the_option(tmp_path, capsys, monkeypatch, argv):
    """NumPy takes seeds >= 0: -1 was an unexpected ValueError mid-run (compare) or a
    line that did not say which option (train)."""
    import importlib

    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(argv[0]).main
    assert main(argv[1:]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "argument --" in err and "seed: must be a whole number" in err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_where_a_table_file_goes_is_refused_before_any_work(tmp_path, capsys):
    """rrnet-run told to --resume or --overwrite a folder given as --out, which both
    failed (--resume after the whole run, blamed on the machine); rrnet-catalog
    --overwrite scanned everything and then failed the same way."""
    from rrnet.cli import catalog, run

    cat = tmp_path / "cat.csv"
    cat.write_text("filename,extname_blue,extname_red,rv\nx.fits,B,R,0\n")
    folder = tmp_path / "out.parquet"
    folder.mkdir()
    (folder / "mine.txt").write_text("kept")
    model = ["--model", str(tmp_path)]
    out = ["--out", str(folder)]
    cases = [
        (run.main, "rrnet-run", [str(cat), *model, *out]),
        (run.main, "rrnet-run", [str(cat), *model, *out, "--resume"]),
        (catalog.main, "rrnet-catalog", ["--overwrite", "scan", str(tmp_path), *out]),
        (infer.main, "rrnet-infer", ["--catalog", str(cat), *model, *out, "--resume"]),
        (preprocess.main, "rrnet-preprocess",
         [str(cat), "--out", str(tmp_path / "store"), "--select", str(folder)]),
    ]  # fmt: skip
    for main, prog, argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
        assert f"{folder} is a folder" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]
    assert not (tmp_path / "store").exists()


def test_infer_error_floor_words_and_default():
    """No --error-floor is the calibration's floor ("auto": none with --raw-errors);
    "none" lets the whole error average down, "calibration" asks for the stored one."""
    assert infer.parse_error_floor(None) == "auto" == infer.parse_error_floor([])
    assert infer.parse_error_floor(["none"]) == "none"
    assert infer.parse_error_floor(["calibration"]) == "calibration"
    assert infer.parse_error_floor(["teff=40", "fe_h=0.03"]) == {"teff": 40.0, "fe_h": 0.03}


def test_an_output_on_a_read_only_file_system_says_so(tmp_path, monkeypatch) -> None:
    """A read-only mount was called "not writable by this user", which sent root looking
    at permissions (found by a user)."""
    import os
    from pathlib import Path

    from rrnet.cli._args import output_problem

    real_statvfs, real_access = os.statvfs, os.access
    mounted = tmp_path / "ro"
    mounted.mkdir()

    class ReadOnly:
        def __init__(self, real) -> None:
            self.f_flag = real.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real_statvfs(p)))
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) != mounted and real_access(p, mode, **kw)
    )
    assert output_problem(mounted / "cat.parquet") == (
        f"--out {mounted / 'cat.parquet'}: the folder {mounted} is on a read-only file system"
    )
    monkeypatch.setattr(os, "statvfs", real_statvfs)  # writable mount, no permission
    assert output_problem(mounted / "cat.parquet").endswith("is not writable by this user")


LATIN1 = os.fsdecode(b"donn\xe9es")  # a folder named in Latin-1: not UTF-8
"""Python keeps its stray byte as a surrogate, which Polars cannot open: every table read
or write ended in "unexpected TypeError: Object does not have a .read() method"."""


@pytest.mark.parametrize(
    ("command", "argv", "option"),
    [
        ("preprocess", ["cat.csv", "--data-dir", ".", "--out", f"{LATIN1}/store"], "--out"),
        ("preprocess", [f"{LATIN1}/cat.csv", "--out", "store"], "CATALOG"),
        ("catalog", ["scan", LATIN1, "--out", "scan.csv"], "DIR"),
        ("catalog", ["from-lamost", "mrs.csv", "--out", f"{LATIN1}/c.csv"], "--out"),
        ("infer", ["--store", "s", "--model", "m", "--out", f"{LATIN1}/c.parquet"], "--out"),
        ("eval", ["overview", f"{LATIN1}/c.parquet", "--out", "o"], "CATALOG"),
        ("train", ["--store", "s", "--labels", f"{LATIN1}/l.csv", "--out", "m"], "--labels"),
    ],
)
def test_a_name_that_is_not_utf8_is_refused_naming_its_option(
    tmp_path, capsys, monkeypatch, command, argv, option
):
    import importlib

    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(f"rrnet.cli.{command}").main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"error: {option}: " in err and "donn\\xe9es" in err and "is not valid UTF-8" in err
    assert list(tmp_path.iterdir()) == []
