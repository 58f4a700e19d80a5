"""Run a corpus of damaged inputs through the rrnet commands and count what went wrong.

Usage: ``python benchmarks/fault_matrix.py [--keep DIR]`` (needs ``../shared``).

Two parts:

* **rows**: one catalogue naming good and damaged spectra (header values that do not
  convert, NaN/zero/negative IVAR, truncated, corrupt or non-FITS files, a folder,
  paths outside the data directory) goes through ``rrnet-preprocess`` and then
  ``rrnet-infer``. Every input row must come out with a status; a damaged one must
  never pass as good (wrong-but-exit-0).
* **commands**: each damaged checkpoint, store, catalogue or argument runs the
  command in a fresh process; the run must end with the expected exit status and at
  most one line on stderr, never a traceback.

Prints one line per case and a summary: rows in, rows out, tracebacks, wrong-but-exit-0.
The target is 0 tracebacks and 0 wrong outputs with every row accounted for; the exit
status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from helpers import (  # noqa: E402
    REAL_FILE,
    SP_LABELS,
    make_checkpoint,
    set_values,
    write_lamost_copy,
)

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
ENV.pop("RRNET_DEBUG", None)


@dataclass
class Outcome:
    name: str
    rc: int
    stderr: str

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr

    @property
    def lines(self) -> int:
        return len([line for line in self.stderr.splitlines() if line.strip()])


def cli(name: str, module: str, *args: object) -> Outcome:
    """Run ``rrnet-<module>`` in this process (``--subprocess``: in a fresh one).

    In this process an exception escaping ``main`` is what a traceback would be.
    """
    argv = [str(a) for a in args]
    if SUBPROCESS:
        proc = subprocess.run(
            [sys.executable, "-m", f"rrnet.cli.{module}", *argv],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
        )
        return Outcome(name, proc.returncode, proc.stderr)
    import importlib
    import io
    import traceback
    from contextlib import redirect_stderr

    main = importlib.import_module(f"rrnet.cli.{module}").main
    buffer = io.StringIO()
    with redirect_stderr(buffer):
        try:
            rc = int(main(argv) or 0)
        except SystemExit as exc:
            rc = int(exc.code or 0)
        except BaseException:
            traceback.print_exc()
            rc = 1
    return Outcome(name, rc, buffer.getvalue())


SUBPROCESS = False


# ----------------------------------------------------------------------- the row corpus


def _patch_card(path: Path, hdu: int, key: str, text: str) -> None:
    """Replace (or add) one header card's value by raw text (NaN, 1e30, 2**70...)."""
    import fitsio

    with fitsio.FITS(str(path), "rw") as f:
        f[hdu].write_key(key, "PLACEHOLDER")
    raw = bytearray(path.read_bytes())
    start = raw.index(f"{key:<8}= 'PLACEHOLDER'".encode())
    raw[start : start + 80] = f"{key:<8}= {text:>20}".ljust(80).encode()
    path.write_bytes(bytes(raw))


def build_rows(data: Path) -> pl.DataFrame:
    """Files under ``data`` and a catalogue naming them; ``expect`` says what must happen."""
    rows: list[tuple[str, str, str]] = []  # filename, expected status, must pass quality?
    shutil.copy(REAL_FILE, data / "good.fits.gz")
    rows.append(("good.fits.gz", "ok", "pass"))
    headers = {
        "obsid_1e30": (0, "OBSID", "1E30"),
        "obsid_2e70": (0, "OBSID", str(2**70)),
        "obsid_text": (0, "OBSID", "'abc'"),
        "ra_nan": (0, "RA", "NaN"),
        "dec_inf": (0, "DEC", "Inf"),
        "nexten_neg": (0, "N_EXTEN", "-3"),
        "snr_nan": (1, "SNR", "NaN"),
        "snr_text": (1, "SNR", "'x'"),
    }
    for name, (hdu, key, text) in headers.items():
        path = write_lamost_copy(data / f"{name}.fits", order=["COADD_B", "COADD_R"])
        _patch_card(path, hdu, key, text)
        rows.append((path.name, "ok", "pass"))
    for name, fn in {
        "ivar_zero": lambda v: np.zeros_like(v),
        "ivar_neg": lambda v: -np.abs(v) - 1,
        "ivar_nan": lambda v: np.full_like(v, np.nan),
    }.items():
        write_lamost_copy(data / f"{name}.fits", edit={"COADD_B": set_values("IVAR", fn)})
        rows.append((f"{name}.fits", "ok", "fail"))
    raw = REAL_FILE.read_bytes()
    (data / "truncated.fits.gz").write_bytes(raw[: len(raw) // 2])
    (data / "corrupt.fits.gz").write_bytes(raw[:100] + bytes(200) + raw[300:])
    (data / "text.fits").write_text("SIMPLE = nonsense\n" * 10)
    (data / "empty.fits").write_bytes(b"")
    plain = gzip.decompress(raw)
    (data / "cut.fits").write_bytes(plain[: len(plain) - 5000])
    (data / "folder.fits").mkdir()
    for name in ("truncated.fits.gz", "corrupt.fits.gz", "text.fits", "empty.fits", "cut.fits"):
        rows.append((name, "bad", "fail"))
    rows.append(("folder.fits", "missing_file", "fail"))
    rows.append(("nothere.fits", "missing_file", "fail"))
    rows.append(("../outside.fits.gz", "outside_data_dir", "fail"))
    rows.append(("/etc/passwd", "outside_data_dir", "fail"))
    shutil.copy(REAL_FILE, data.parent / "outside.fits.gz")
    return pl.DataFrame(
        {
            "filename": [r[0] for r in rows],
            "extname_blue": ["COADD_B"] * len(rows),
            "extname_red": ["COADD_R"] * len(rows),
            "rv": [-20.0] * len(rows),
            "expect_status": [r[1] for r in rows],
            "expect_quality": [r[2] for r in rows],
        }
    )


def check_rows(manifest: pl.DataFrame, catalogue: pl.DataFrame) -> list[str]:
    """Rows whose outcome is wrong (a damaged row passing, a good one lost)."""
    wrong = []
    for row in manifest.iter_rows(named=True):
        status, want = row["status"], row["expect_status"]
        status_ok = status == want or (want == "bad" and status not in ("ok", None))
        quality_ok = bool(row["quality_ok"]) == (row["expect_quality"] == "pass")
        if not status_ok or not quality_ok:
            wrong.append(f"{row['filename']}: status {status}, quality_ok {row['quality_ok']}")
    flagged = catalogue.filter(
        (pl.col("input_expect_quality") if "input_expect_quality" in catalogue.columns
         else pl.col("expect_quality")) == "fail"
    )  # fmt: skip
    if (flagged["flag"] == 1).any():
        wrong.append("a damaged row has flag 1 in the catalogue")
    return wrong


# ------------------------------------------------------------------ the command corpus


def damage_checkpoints(good: Path, root: Path) -> dict[str, Path]:
    cases = {}

    def copy(name: str) -> Path:
        path = root / name
        shutil.copytree(good, path)
        cases[name] = path
        return path

    (copy("member_garbage") / "member-0.safetensors").write_bytes(b"\x00garbage" * 100)
    member = copy("member_truncated") / "member-0.safetensors"
    member.write_bytes(member.read_bytes()[:300])
    (copy("member_missing") / "member-0.safetensors").unlink()
    (copy("member_pickle") / "member-0.safetensors").write_bytes(b"\x80\x04\x95" + bytes(64))
    for name, edit in {
        "config_members_text": lambda c: c.update(n_members="three"),
        "config_members_huge": lambda c: c.update(n_members=10**21),
        "config_labels_int": lambda c: c.update(labels=5),
        "config_model_list": lambda c: c.update(model=[1, 2]),
        "config_no_model": lambda c: c.pop("model"),
    }.items():
        path = copy(name) / "config.json"
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))
    (copy("config_not_json") / "config.json").write_text("{not json")
    return cases


def damage_stores(good: Path, root: Path) -> dict[str, Path]:
    cases = {}

    def copy(name: str) -> Path:
        path = root / name
        shutil.copytree(good, path)
        cases[name] = path
        return path

    (copy("shard_missing") / "shards" / "normalized-000000.npy").unlink()
    shard = copy("shard_truncated") / "shards" / "normalized-000000.npy"
    shard.write_bytes(shard.read_bytes()[:1000])
    (copy("manifest_broken") / "manifest.parquet").write_bytes(b"PAR1 broken")
    (copy("manifest_missing") / "manifest.parquet").unlink()
    (copy("store_json_broken") / "store.json").write_text("{")
    return cases


def command_cases(work: Path, store: Path, model: Path, catalog: Path, data: Path) -> list:
    """``(name, module, args, expected exit status)``."""
    out = work / "cmd"
    out.mkdir()
    header_only = work / "header_only.csv"
    header_only.write_text("filename,extname_blue,extname_red,rv\n")
    pre = ["--data-dir", data, "--quiet"]
    cases = []
    for name, path in damage_checkpoints(model, work / "ckpt").items():
        args = ["--store", store, "--model", path, "--out", out / f"{name}.parquet"]
        cases.append((f"infer checkpoint {name}", "infer", [*args, "--no-progress"], 2))
    for name, path in damage_stores(store, work / "stores").items():
        args = ["--store", path, "--model", model, "--out", out / f"{name}.parquet"]
        cases.append((f"infer store {name}", "infer", [*args, "--no-progress"], 2))
    for flag, value in (
        ("--max-iter", "1e21"),
        ("--max-iter", str(10**21)),
        ("--min-snr", "nan"),
        ("--min-snr", "inf"),
        ("--max-outliers", "-5"),
        ("--workers", "-3"),
        ("--shard-size", "0"),
    ):
        args = [catalog, *pre, "--out", out / f"pre{flag}{value[:5]}", flag, value]
        cases.append((f"preprocess {flag} {value}", "preprocess", args, 2))
    for flag, value in (("--min-snr", "nan"), ("--workers", "-3"), ("--batch-size", "-1")):
        args = ["--catalog", catalog, "--data-dir", data, "--model", model, "--no-progress"]
        args += ["--out", out / f"inf{flag}.parquet", flag, value]
        cases.append((f"infer {flag} {value}", "infer", args, 2))
    cases.append(
        ("preprocess header-only catalogue", "preprocess",
         [header_only, *pre, "--out", out / "ho_store"], 2)
    )  # fmt: skip
    cases.append(
        ("infer header-only catalogue", "infer",
         ["--catalog", header_only, "--data-dir", data, "--model", model, "--no-progress",
          "--out", out / "ho.parquet"], 2)
    )  # fmt: skip
    cases.append(
        ("preprocess --out /dev/null", "preprocess",
         [catalog, *pre, "--out", "/dev/null", "--overwrite"], 2)
    )  # fmt: skip
    cases.append(
        ("infer --out /dev/null --overwrite", "infer",
         ["--store", store, "--model", model, "--no-progress", "--out", "/dev/null",
          "--format", "parquet", "--overwrite"], 2)
    )  # fmt: skip
    return cases


# ------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--subprocess", action="store_true", help="run every command in a fresh process"
    )
    args = parser.parse_args()
    global SUBPROCESS
    SUBPROCESS = args.subprocess
    work = args.keep or Path(tempfile.mkdtemp(prefix="rrnet-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    data.mkdir()
    table = build_rows(data)
    catalog = work / "corpus.csv"
    table.write_csv(catalog)
    store, cat = work / "store", work / "catalogue.parquet"
    outcomes = [cli("preprocess corpus", "preprocess", catalog, "--data-dir", data,
                    "--out", store, "--quiet", "--shard-size", "8")]  # fmt: skip
    from rrnet.store import open_store

    fingerprint = open_store(store).fingerprint if outcomes[0].rc == 0 else None
    model = make_checkpoint(work / "SP", SP_LABELS, members=2, seed=1, preprocessing=fingerprint)
    outcomes.append(cli("infer corpus", "infer", "--store", store, "--model", model,
                        "--out", cat, "--no-progress"))  # fmt: skip
    rows_in = table.height
    manifest = open_store(store).manifest if outcomes[0].rc == 0 else pl.DataFrame()
    catalogue = pl.read_parquet(cat) if cat.exists() else pl.DataFrame()
    rows_out = min(manifest.height, catalogue.height)
    wrong = check_rows(manifest, catalogue) if rows_out else ["no output"]
    for case, module, cargs, expected in command_cases(work, store, model, catalog, data):
        outcome = cli(case, module, *cargs)
        outcomes.append(outcome)
        print(f"  ... {case}: exit {outcome.rc}", file=sys.stderr, flush=True)
        if outcome.rc != expected:
            wrong.append(f"{case}: exit {outcome.rc}, expected {expected}")
        if outcome.rc and outcome.lines != 1:
            wrong.append(f"{case}: {outcome.lines} lines on stderr")
    tracebacks = [o.name for o in outcomes if o.traceback]
    for o in outcomes:
        last = o.stderr.strip().splitlines()[-1] if o.stderr.strip() else ""
        print(f"{o.rc:>4}  {o.name:<45} {last[:110]}")
    for line in wrong:
        print(f"WRONG  {line}")
    for name in tracebacks:
        print(f"TRACEBACK  {name}")
    print(
        f"rows in {rows_in}, rows out {rows_out}, tracebacks {len(tracebacks)}, "
        f"wrong {len(wrong)} (of {len(outcomes)} runs)"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not tracebacks and not wrong and rows_out == rows_in else 1


if __name__ == "__main__":
    sys.exit(main())
