"""Constants and plain helpers shared by several test modules (not a test module).

The one spelling of the project's shared data lives here (``SHARED``): ``../shared``
beside the checkout, or ``$RRNET_SHARED``. See ``conftest.py`` for the rule on what goes
where. Import as ``from helpers import ...`` (``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from rrnet.grid import N_PIX, N_PIX_ARM
from rrnet.labels import CA_LABELS, SP_LABELS
from rrnet.models import ModelConfig, build_model
from rrnet.models.checkpoint import save_checkpoint
from rrnet.preprocess.pipeline import preprocess_catalog
from rrnet.synth.dataset import LABELS

# ------------------------------------------------------------------ outside programs
OUTSIDE_TOOLS = {"fitsverify": ("fitsverify",), "stilts": ("stilts",),
                 "chromium": ("chromium", "chromium-browser", "google-chrome")}  # fmt: skip
"""The outside programs whose tests skip where they are missing (Debian package: names)."""


def missing_outside_tools() -> list[str]:
    return [pkg for pkg, names in OUTSIDE_TOOLS.items() if not any(map(shutil.which, names))]


# ------------------------------------------------------------------ the shared data
TESTS = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("RRNET_SHARED") or TESTS.parent.parent / "shared").resolve()
"""The project's shared data: ``../shared`` beside the checkout, or ``$RRNET_SHARED``."""
FIXTURES = SHARED / "fixtures" / "original_rrnet"
LABEL_CONFIG = SHARED / "data" / "label_config.pkl"
ISOCHRONES = SHARED / "data" / "MIST_iso_7Gyr.csv"
REAL_FILE = SHARED / "data" / "lamost" / "med-58025-HIP9645901_sp02-051.fits.gz"
EXPOSURES = ("83555758", "83555772", "83555785", "83555799")
SPECTRA = [("COADD_B", "COADD_R")] + [(f"B-{i}", f"R-{i}") for i in EXPOSURES]
"""The real file's 5 spectra as (extname_blue, extname_red)."""

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"needs the project's shared data, not found at {SHARED} (set RRNET_SHARED)",
)
"""Mark for tests (or ``pytestmark`` of modules) that read files under ``SHARED``."""


# ------------------------------------------------------ the authors' networks (oracle)
def authors_forward(
    sd: dict[str, torch.Tensor], net: str, mode: str, x: torch.Tensor, pre_steps: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Literal functional transcription of the authors' RRNet.py / StarNet.py forward (eval).

    An independent oracle: plain F.conv1d / nn.RNN on the raw state_dict, with the
    authors' hard-coded reshapes (pre-RNN ``view(-1, 20, 360)``, post-RNN
    ``permute(0, 2, 1).reshape(B, -1, 360)``).
    """

    def rnn(seq: torch.Tensor) -> torch.Tensor:
        size = sd["rnn.weight_ih_l0"].shape[1]
        layer = torch.nn.RNN(size, size, batch_first=True)
        layer.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
        return layer(seq)[0]

    b = x.shape[0]
    if mode == "pre-RNN":
        x = rnn(x.view(-1, pre_steps, 7200 // pre_steps))
    h = x.reshape(-1, 1, 7200)
    if net == "RRNet":
        i = 0
        while f"ResBlock_list.{i}.0.ResBlock.0.weight" in sd:
            p = f"ResBlock_list.{i}.0."
            y = F.conv1d(h, sd[p + "ResBlock.0.weight"], sd[p + "ResBlock.0.bias"], padding=1)
            y = F.conv1d(
                y.relu(), sd[p + "ResBlock.2.weight"], sd[p + "ResBlock.2.bias"], padding=1
            )
            if p + "downsample.0.weight" in sd:
                y = y + F.conv1d(h, sd[p + "downsample.0.weight"], sd[p + "downsample.0.bias"])
            else:
                y = y + h
            h = F.avg_pool1d(y, 2)
            i += 1
        h = h.relu()
    else:
        h = F.conv1d(h, sd["conv1.0.weight"], sd["conv1.0.bias"], padding=1).relu()
        h = F.conv1d(h, sd["conv2.0.weight"], sd["conv2.0.bias"], padding=1).relu()
        h = F.max_pool1d(h, 4)
    if mode == "post-RNN":
        h = rnn(h.permute(0, 2, 1).reshape(b, -1, 360))
    h = F.linear(h.flatten(1), sd["fc1.0.weight"], sd["fc1.0.bias"]).relu()
    h = F.linear(h, sd["fc2.0.weight"], sd["fc2.0.bias"]).relu()
    mu = F.linear(h, sd["mu.weight"], sd["mu.bias"])
    var = F.softplus(F.linear(h, sd["sigma.0.weight"], sd["sigma.0.bias"]))
    return mu, var


# ------------------------------------------ edited copies of the real LAMOST file
HEADER_KEYS = ("FILENAME", "OBSID", "RA", "DEC", "DESIG", "N_EXTEN")
TABLE_KEYS = ("SNR", "EXPTIME", "LMJM")


def _real_content() -> tuple[dict, dict[str, tuple[np.ndarray, dict]]]:
    with fitsio.FITS(str(REAL_FILE)) as f:
        primary = f[0].read_header()
        head = {k: primary[k] for k in HEADER_KEYS}
        tables = {}
        for hdu in f[1:]:
            header = hdu.read_header()
            tables[hdu.get_extname()] = (
                hdu.read(),
                {k: header[k] for k in TABLE_KEYS if k in header},
            )
    return head, tables


def write_lamost_copy(
    dst: Path,
    *,
    order: list[str] | None = None,
    drop: tuple[str, ...] = (),
    edit: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    compress: bool = False,
) -> Path:
    """Rewrite the real file with HDUs reordered/dropped and tables edited.

    ``edit[extname]`` maps the table's structured array to a new one (drop a
    column, change values, make vector columns...). N_EXTEN is kept consistent.
    """
    head, tables = _real_content()
    names = [n for n in (order or list(tables)) if n not in drop]
    head["N_EXTEN"] = len(names) + 1
    plain = dst.with_name(f".plain-{dst.name}.fits") if compress else dst
    with fitsio.FITS(str(plain), "rw", clobber=True) as f:
        f.write(None, header=[{"name": k, "value": v} for k, v in head.items()])
        for name in names:
            data, header = tables[name]
            if edit and name in edit:
                data = edit[name](data)
            f.write(data, extname=name, header=[{"name": k, "value": v} for k, v in header.items()])
    if compress:
        dst.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    return dst


def drop_column(name: str) -> Callable[[np.ndarray], np.ndarray]:
    def edit(data: np.ndarray) -> np.ndarray:
        keep = [n for n in data.dtype.names if n != name]
        out = np.empty(data.size, dtype=[(n, data.dtype[n]) for n in keep])
        for n in keep:
            out[n] = data[n]
        return out

    return edit


def as_vector_row(lengths: dict[str, int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """One-row table of vector columns (other DR layouts); ``lengths`` truncates columns."""

    def edit(data: np.ndarray) -> np.ndarray:
        sizes = {n: (lengths or {}).get(n, data.size) for n in data.dtype.names}
        out = np.zeros(1, dtype=[(n, data.dtype[n], (sizes[n],)) for n in data.dtype.names])
        for n in data.dtype.names:
            out[n][0] = data[n][: sizes[n]]
        return out

    return edit


def as_wavelength_row(data: np.ndarray) -> np.ndarray:
    """The DR9 v1.0+ layout of a table: one row of vector columns, WAVELENGTH [Angstrom,
    float64] in place of LOGLAM (as hypergravity/laspec's MrsSpec.from_hdu reads them)."""
    names = ["WAVELENGTH" if n == "LOGLAM" else n for n in data.dtype.names]
    dtypes = [np.float64 if n == "LOGLAM" else data.dtype[n] for n in data.dtype.names]
    out = np.zeros(1, dtype=[(m, t, (data.size,)) for m, t in zip(names, dtypes, strict=True)])
    for old, new in zip(data.dtype.names, names, strict=True):
        out[new][0] = 10.0 ** data[old].astype(np.float64) if old == "LOGLAM" else data[old]
    return out


def set_values(column: str, values: Callable[[np.ndarray], np.ndarray]):
    def edit(data: np.ndarray) -> np.ndarray:
        data = data.copy()
        data[column] = values(data[column])
        return data

    return edit


# ------------------------------------------- an inference world (store + checkpoints)
TINY = dict(net="rrnet", mode="raw", channels=(2,), hidden=(8, 8))


def input_catalogue() -> pl.DataFrame:
    """Good spectra of the real file plus rows that must fail, each with a star id."""
    name = REAL_FILE.name
    rows = [(name, "COADD_B", "COADD_R", 10.0, "HIP96459")]
    rows += [(name, f"B-{i}", f"R-{i}", 10.0 + k, "HIP96459") for k, i in enumerate(EXPOSURES)]
    rows += [
        ("missing.fits.gz", "COADD_B", "COADD_R", 0.0, "ghost"),
        (name, "B-1", "R-1", 0.0, "ghost"),
        (name, "COADD_B", "COADD_R", None, "other"),
        (name, "COADD_B", "COADD_R", -25.0, "other"),
    ]
    schema = ["filename", "extname_blue", "extname_red", "rv", "star_id"]
    return pl.DataFrame(rows, schema=schema, orient="row")


def varied_rv_catalogue(data: Path, n: int = 13) -> pl.DataFrame:
    """``n`` rows of the real file's 5 spectra, repeated, with RVs from -60 to 60 km/s;
    links the real file into ``data`` (the catalogue's data directory)."""
    (data / REAL_FILE.name).symlink_to(REAL_FILE)
    rows = [(REAL_FILE.name, b, r) for _ in range(-(-n // len(SPECTRA))) for b, r in SPECTRA][:n]
    cat = pl.DataFrame(rows, schema=["filename", "extname_blue", "extname_red"], orient="row")
    return cat.with_columns(rv=pl.Series(np.linspace(-60, 60, n)), obsid=pl.int_range(n))


def make_checkpoint(
    path: Path,
    labels: tuple[str, ...],
    *,
    members: int,
    seed: int,
    preprocessing: dict | None,
    training: dict | None = None,
) -> Path:
    """Random-weight checkpoint; label scaling puts outputs near physical values."""
    torch.manual_seed(seed)
    config = ModelConfig(num_labels=len(labels), **TINY)
    sds = [build_model(config).state_dict() for _ in range(members)]
    rng = np.random.default_rng(seed)
    mean = np.array(
        [5000.0 if lab == "Teff[K]" else 4.0 if lab == "Logg" else 0.0 for lab in labels]
    )
    std = np.array([500.0 if lab == "Teff[K]" else 0.3 for lab in labels])
    return save_checkpoint(
        path,
        model_config=config,
        labels=labels,
        member_state_dicts=sds,
        flux_mean=rng.uniform(0.9, 1.1, 7200).astype(np.float32),
        flux_std=rng.uniform(0.05, 0.2, 7200).astype(np.float32),
        label_mean=mean,
        label_std=std,
        preprocessing=preprocessing,
        training=training,
    )


def build_world(root: Path) -> dict:
    """A store of the input catalogue (shards of 3 rows) and SP/CA checkpoints."""
    store = preprocess_catalog(  # catalogue RVs only: its unusable RV is to stay bad_rv
        input_catalogue(), REAL_FILE.parent, root / "store", workers=0, shard_size=3,
        progress=False, rv_mode="catalog",
    )  # fmt: skip
    fp = store.fingerprint
    sp = make_checkpoint(root / "SP", SP_LABELS, members=3, seed=1, preprocessing=fp)
    ca = make_checkpoint(root / "CA", CA_LABELS, members=2, seed=2, preprocessing=fp)
    return {"root": root, "store": store.path, "sp": sp, "ca": ca, "fp": fp}


# --- official LAMOST MRS catalogue rows for the real file

RV_COLUMNS = [f"rv_{f}{v}" for f in ("b", "r", "br", "lasp") for v in (0, 1)]


def real_header() -> dict:
    return dict(fitsio.read_header(str(REAL_FILE), ext=0))


def official_row(band: str, lmjm: str | None, *, rv: float = -20.5, **over) -> dict:
    """One band of one spectrum of the real file, as the MRS general catalogue has it."""
    h = real_header()
    row = {
        "obsid": h["OBSID"],
        "gp_id": 123,
        "designation": h["DESIG"],
        "lmjd": h["LMJD"],
        "mjd": h["MJD"],
        "planid": h["PLANID"],
        "spid": h["SPID"],
        "fiberid": h["FIBERID"],
        "lmjm": int(lmjm) if lmjm else int(EXPOSURES[0]),
        "band": band,
        "coadd": 0 if lmjm else 1,
        "ra": h["RA"],
        "dec": h["DEC"],
        "snr": 50.0,
    }
    for c in RV_COLUMNS:
        row[c] = rv + (0.3 if c.endswith("0") else 0.0)
        row[f"{c}_err"] = 0.8
    row |= {"rv_b_flag": 0, "rv_r_flag": 0, "rv_br_flag": 0}
    return row | over


def official_catalogue(**per_spectrum) -> pl.DataFrame:
    """The real file's 5 spectra, R before B for exposures (the order must not matter)."""
    rows = [official_row("B", None, rv=-20.0), official_row("R", None, rv=-20.0)]
    for i, lmjm in enumerate(EXPOSURES):
        over = per_spectrum.get(lmjm, {})
        rows.append(official_row("R", lmjm, rv=-21.0 - i, **over))
        rows.append(official_row("B", lmjm, rv=-21.0 - i, **over))
    return pl.DataFrame(rows)


# --- an analytic spectral library (Gaussian lines) for synthesis tests

LINES = np.concatenate([np.arange(4961.0, 5336.0, 3.3), np.arange(6331.0, 6707.0, 4.1)])


@dataclass
class AnalyticLibrary:
    """Library-shaped object: Gaussian lines, two windows (RRNet +- 10 A) like the real one."""

    labels: pl.DataFrame
    wavelength: np.ndarray
    flux: np.ndarray


@functools.cache
def library(n: int = 6) -> AnalyticLibrary:
    wave = np.concatenate([np.arange(4958.0, 5338.0, 0.02), np.arange(6329.0, 6709.0, 0.02)])
    rng = np.random.default_rng(0)
    flux = np.ones((n, wave.size), np.float32)
    for i in range(n):
        depth = rng.uniform(0.1, 0.6, LINES.size)
        for c, d in zip(LINES, depth, strict=True):
            near = np.abs(wave - c) < 1.0
            flux[i, near] -= d * np.exp(-0.5 * ((wave[near] - c) / 0.12) ** 2)
    labels = {c: rng.normal(size=n) for c in LABELS}
    labels["Teff[K]"] = rng.uniform(4000, 6500, n)
    return AnalyticLibrary(
        pl.DataFrame({"star_id": [f"lib-{i:03d}" for i in range(n)], **labels}), wave, flux
    )


# The OOD subspace tests' toy family (tests/models/test_ood_subspace.py, test_ood_shape.py)
_OOD_RNG = np.random.default_rng(5)
_OOD_X = np.linspace(0.0, 1.0, N_PIX)
_OOD_LINES = np.exp(-0.5 * ((_OOD_X[:, None] - _OOD_RNG.uniform(0, 1, 60)) / 4e-4) ** 2)
OOD_BASE = 1.0 - 0.3 * _OOD_LINES.sum(1)
OOD_BASIS = np.stack([0.05 * np.sin((j + 1) * np.pi * _OOD_X + j) for j in range(8)])


def ood_toy(
    n: int, snr: np.ndarray | float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` clean spectra ``OOD_BASE + 8 smooth directions`` with Gaussian noise of
    sigma ``1/snr`` (red arm 1.3 x snr); returns (flux, snr_blue, snr_red)."""
    rng = np.random.default_rng(seed)
    snr_b = np.broadcast_to(np.asarray(snr, dtype=np.float64), (n,)).copy()
    snr_r = snr_b * 1.3
    flux = OOD_BASE + rng.normal(0.0, 1.0, (n, 8)) @ OOD_BASIS
    sigma = np.empty((n, N_PIX))
    sigma[:, :N_PIX_ARM], sigma[:, N_PIX_ARM:] = 1 / snr_b[:, None], 1 / snr_r[:, None]
    return flux + rng.normal(0.0, 1.0, flux.shape) * sigma, snr_b, snr_r


OOD_SNR_BINS = ((5, 10), (10, 20), (20, 40), (40, 100), (100, 300))
"""The S/N bins of issue 17's clean-spectrum target."""


def ood_clean_flag_rates(sub, seed: int, n: int = 300) -> dict[tuple[int, int], float]:
    """Per S/N bin, the fraction of ``n`` clean held-out :func:`ood_toy` spectra (S/N
    log-uniform in the bin, noise seed ``seed + lo``) that ``sub`` flags at 0.99."""
    from rrnet.models import ood_subspace

    rates = {}
    for lo, hi in OOD_SNR_BINS:
        snr = np.exp(np.random.default_rng(lo).uniform(np.log(lo), np.log(hi), n))
        flux, snr_b, snr_r = ood_toy(n, snr, seed + lo)
        score = ood_subspace.score(sub, flux, snr_b, snr_r, 0.99)
        rates[(lo, hi)] = float(np.mean(score > 1.0))
    return rates


def ood_artefacts_by_hand(z2: np.ndarray) -> np.ndarray:
    """Pixels :func:`rrnet.models.ood_subspace.despike` replaces, widened by
    ARTEFACT_DILATE (scipy.signal)."""
    from scipy.signal import medfilt

    from rrnet.models import ood_subspace

    h = ood_subspace.SPIKE_WIDTH // 2
    padded = np.r_[np.full(h, z2[0]), z2, np.full(h, z2[-1])]
    med = medfilt(padded, ood_subspace.SPIKE_WIDTH)[h:-h]
    spike = z2 > ood_subspace.SPIKE_FACTOR * np.maximum(med, 1.0)
    width = 2 * ood_subspace.ARTEFACT_DILATE + 1
    return np.convolve(spike.astype(float), np.ones(width), mode="same") > 0
