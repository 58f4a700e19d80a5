"""Type stub of the compiled Rust module ``rrnet._core`` (use :mod:`rrnet.preprocess`)."""

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_INFLATED",
    "DEFAULT_MAX_ITER",
    "N_PIX",
    "conv1d_forward",
    "conv1d_grad_input",
    "conv1d_grad_weight",
    "despike_rows",
    "grid",
    "normalize_batch",
    "read_lamost_batch",
    "resample",
    "resample_arrays",
    "resample_batch",
    "running_median_rows",
    "rv_correct",
    "rv_inputs",
    "rv_measure_batch",
    "rv_status_codes",
    "snr_ivar",
    "status_codes",
]

N_PIX: int
DEFAULT_MAX_ITER: int

_ArmTuple = tuple[
    npt.NDArray[np.float64],  # loglam, flat
    npt.NDArray[np.int64],  # its offsets (n + 1)
    npt.NDArray[np.float32],  # flux, flat
    npt.NDArray[np.int64],
    npt.NDArray[np.float32] | None,  # ivar, flat
    npt.NDArray[np.int64] | None,
]

def status_codes() -> list[tuple[int, str]]: ...
def grid(arm: str) -> npt.NDArray[np.float64]: ...
def rv_correct(loglam: npt.NDArray[np.float64], rv_kms: float) -> npt.NDArray[np.float64]: ...
def resample(
    wave: npt.NDArray[np.float64], flux: npt.NDArray[np.float32], grid: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]: ...
def snr_ivar(
    wave: npt.NDArray[np.float64],
    flux: npt.NDArray[np.float32],
    ivar: npt.NDArray[np.float32],
    lo: float,
    hi: float,
) -> float: ...
def normalize_batch(
    flux: npt.NDArray[np.float32],
    max_iter: int,
    threads: int | None = None,
    out: npt.NDArray[np.float32] | None = None,  # [n, 7200], written in place and returned
) -> tuple[
    npt.NDArray[np.float32],  # flux [n, 7200]
    npt.NDArray[np.uint32],  # iterations [n, 2]
    npt.NDArray[np.bool_],  # cap_hit [n]
    npt.NDArray[np.uint32],  # n_outliers [n]
    npt.NDArray[np.uint32],  # max_outlier_run [n]
    npt.NDArray[np.uint8],  # status [n]
]: ...

_ResampleOut = tuple[
    npt.NDArray[np.float32],  # flux [n, 7200]
    npt.NDArray[np.uint8],  # status [n]
    npt.NDArray[np.float64],  # snr_blue [n]
    npt.NDArray[np.float64],  # snr_red [n]
]

def resample_batch(
    blue: _ArmTuple,
    red: _ArmTuple,
    rv_kms: npt.NDArray[np.float64],
    correct_rv: bool = True,
    threads: int | None = None,
    out: npt.NDArray[np.float32] | None = None,  # [n, 7200], written in place and returned
) -> _ResampleOut: ...

_ArmLists = tuple[
    list[npt.NDArray[np.float64]],  # loglam, one 1-d array per spectrum
    list[npt.NDArray[np.float32]],  # flux
    list[npt.NDArray[np.float32]] | None,  # ivar
]

def resample_arrays(
    blue: _ArmLists,
    red: _ArmLists,
    rv_kms: npt.NDArray[np.float64],
    correct_rv: bool = True,
    threads: int | None = None,
    out: npt.NDArray[np.float32] | None = None,  # [n, 7200], written in place and returned
) -> _ResampleOut: ...
def rv_inputs(
    blue: _ArmLists,  # ivar required
    red: _ArmLists,
    normalised: npt.NDArray[np.float32],  # [n, 7200], unshifted
    usable: npt.NDArray[np.bool_],  # [n]
    threads: int | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...  # flux, ivar [n, 7200]
def rv_measure_batch(
    flux: npt.NDArray[np.float32],
    ivar: npt.NDArray[np.float32],
    templates: npt.NDArray[np.float32],
    ln0: tuple[float, float],
    dln: float,
    window_kms: float = 600.0,
    coarse_kms: float = 15.0,
    fine_kms: float = 3.0,
    threads: int | None = None,
) -> tuple[
    npt.NDArray[np.float64],  # rv [n, 3] (blue, red, combined) km/s
    npt.NDArray[np.float64],  # err [n, 3] km/s
    npt.NDArray[np.float64],  # chi2_red [n, 3]
    npt.NDArray[np.uint8],  # status [n, 3]
    npt.NDArray[np.int32],  # best template [n]
]: ...
def rv_status_codes() -> list[tuple[int, str]]: ...

DEFAULT_MAX_INFLATED: int

_ArmRead = tuple[
    str,  # status: "ok", "missing_extension", "bad_columns"
    str,  # reason ("" when ok)
    list[tuple[str, str]],  # (keyword, raw value field) of the requested arm keys
    npt.NDArray[np.float64] | None,  # loglam
    npt.NDArray[np.float32] | None,  # flux
    npt.NDArray[np.float32] | None,  # ivar
    npt.NDArray[np.int32] | None,  # mask (ANDMASK, else PIXMASK)
    npt.NDArray[np.int32] | None,  # ormask
]

def running_median_rows(
    values: npt.NDArray[np.float64], width: int, threads: int | None = None
) -> npt.NDArray[np.float64]: ...
def despike_rows(
    values: npt.NDArray[np.float64], width: int, factor: float, threads: int | None = None
) -> npt.NDArray[np.float64]: ...
def read_lamost_batch(
    paths: list[str],
    extnames: list[list[str]],
    primary_keys: list[str],
    arm_keys: list[str],
    max_inflated: int,
    threads: int | None = None,
    masks: bool = True,
) -> list[
    tuple[
        str,  # status: "ok", "missing_file", "bad_fits", "too_large" or "unsupported"
        str,  # reason
        list[tuple[str, str]],  # primary-header (keyword, raw value field)
        list[str | None],  # EXTNAME of HDUs 1..
        int,  # number of HDUs
        list[_ArmRead],  # one per requested extname, in order
    ]
]: ...

# Grouped conv1d (rrnet.training.conv): float32 C-contiguous arrays, written in place;
# x [B, G*C_in, L], w [G*C_out, C_in, K], out/gy/mask [B, G*C_out, L_out]; one thread.
def conv1d_forward(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32],
    stride: int,
    padding: int,
    groups: int,
    relu: bool,
    accumulate: bool,  # add to what out holds (before the ReLU)
) -> None: ...
def conv1d_grad_input(
    gy: npt.NDArray[np.float32],
    mask: npt.NDArray[np.float32] | None,  # the forward's output when it had a ReLU
    w: npt.NDArray[np.float32],
    gx: npt.NDArray[np.float32],
    stride: int,
    padding: int,
    groups: int,
) -> None: ...
def conv1d_grad_weight(
    x: npt.NDArray[np.float32],
    gy: npt.NDArray[np.float32],
    mask: npt.NDArray[np.float32] | None,
    gw: npt.NDArray[np.float32],
    gb: npt.NDArray[np.float32] | None,
    stride: int,
    padding: int,
    groups: int,
) -> None: ...
