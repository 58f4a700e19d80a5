"""One batch of catalogue rows (one store shard): the arms of its files come in, the Rust
kernels run on them chunk by chunk on a compute thread, and the batch's manifest rows and
fluxes come out (:class:`PreprocessedBatch`), every row with a status and, when not
``ok``, a reason."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from rrnet.grid import BLUE_GRID, N_PIX, RED_GRID
from rrnet.preprocess import Status, normalize_detailed, reason, resample_batch, rv_policy
from rrnet.preprocess.kernels import arm_detail, range_detail, snr_ivar
from rrnet.preprocess.planning import BatchPlan, Job
from rrnet.preprocess.prefetch import NOTES_KEY, Immediate
from rrnet.preprocess.results import NormalizeResult, ResampleResult
from rrnet.preprocess.settings import PreprocessSettings
from rrnet.preprocess.shard_files import ShardFiles
from rrnet.preprocess.status import PreprocessError

log = logging.getLogger(__name__)

KERNEL_STATUS_NAMES: dict[Status, str] = {
    Status.OK: "ok",
    Status.NON_FINITE_FLUX: "bad_flux",
    Status.DEGENERATE_ARM: "degenerate_arm",
    Status.GRID_OUT_OF_RANGE: "grid_out_of_range",
    Status.BAD_WAVELENGTH: "bad_wavelength",
    Status.TOO_FEW_POINTS: "too_few_points",
    Status.LENGTH_MISMATCH: "bad_columns",
    Status.NONPOSITIVE_CONTINUUM: "nonpositive_continuum",
}
"""Manifest status for each kernel status code."""

COMPUTE_CHUNK = 256
"""Spectra handed to the Rust kernels per call (bounds the raw arrays held at once)."""

CHUNKS_IN_FLIGHT = 2
"""Kernel chunks a batch has out on the compute thread before it waits for the oldest."""

MANIFEST_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "row": pl.Int64,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "snr_blue": pl.Float64,
    "snr_red": pl.Float64,
    "snr_blue_ivar": pl.Float64,
    "snr_red_ivar": pl.Float64,
    "n_outliers": pl.Int64,
    "max_outlier_run": pl.Int64,
    "continuum_iterations": pl.Int64,
    "continuum_iterations_blue": pl.Int64,
    "continuum_iterations_red": pl.Int64,
    "cap_hit": pl.Boolean,
    "rv_measured": pl.Float64,
    "rv_measured_err": pl.Float64,
    "rv_measured_status": pl.Utf8,
    "rv_template_teff": pl.Float64,
    "rv_template_logg": pl.Float64,
    "rv_template_feh": pl.Float64,
    "rv_used": pl.Float64,
    "rv_used_source": pl.Utf8,
    "rv_disagree": pl.Boolean,
    "quality_ok": pl.Boolean,
    "quality_reason": pl.Utf8,
    "shard": pl.Int64,
    "offset": pl.Int64,
}
"""Columns the pipeline appends to the catalogue's (``docs/store.md`` explains each)."""

HEADER_COLUMNS: dict[str, pl.DataType | type[pl.DataType]] = {
    "obsid": pl.Int64,
    "ra": pl.Float64,
    "dec": pl.Float64,
    "desig": pl.Utf8,
}
"""Taken from the FITS primary header when the catalogue does not have them."""


@dataclass(frozen=True)
class QualityCuts:
    """The paper's selection, recorded in ``quality_ok`` and never applied destructively.

    A row passes if it preprocessed (status ``ok``), ``min(snr_blue, snr_red) >=
    min_snr``, ``n_outliers <= max_outliers`` and ``max_outlier_run <=
    max_outlier_run``. ``snr_*`` follow :func:`snr_rule`: the header SNR of the
    named extensions, the FLUX/IVAR estimate where a header has no finite one, and
    null (failing the cut) when the arm's IVAR has no usable pixel.
    """

    min_snr: float = 10.0
    max_outliers: int = 100
    max_outlier_run: int = 30


@dataclass(frozen=True)
class PreprocessedBatch:
    """Consecutive catalogue rows, preprocessed.

    Attributes
    ----------
    index : int
        Batch number (catalogue rows ``index * batch_size`` onwards).
    rows : int64 [n]
        Catalogue indices (0-based) of the rows.
    manifest : pl.DataFrame
        The catalogue rows plus the pipeline columns (:data:`MANIFEST_SCHEMA`).
    flux : float32 [n, 7200] or None
        Continuum-normalised flux, all NaN where status is not ``ok``; None (and
        ``resampled`` None) when the rows went to ``files`` as they were finished.
    resampled : float32 [n, 7200] or None
        Flux on the grid before normalisation (NaN where resampling failed);
        None unless requested.
    fallbacks : list of (path, reason)
        Files the Rust reader left to fitsio, and why.
    files : ShardFiles or None
        The shard's flux files, already written while it was computed (by
        :func:`preprocess_catalog` for float32 stores; to be committed), or None.
    """

    index: int
    rows: np.ndarray
    manifest: pl.DataFrame
    flux: np.ndarray | None
    resampled: np.ndarray | None
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    files: ShardFiles | None = field(default=None, repr=False, compare=False)


_FLOAT_COLUMNS = (
    "snr_blue", "snr_red", "snr_blue_ivar", "snr_red_ivar", "rv_measured", "rv_measured_err",
    "rv_template_teff", "rv_template_logg", "rv_template_feh", "rv_used",
)  # fmt: skip
"""Float manifest columns, held as float64 arrays while a batch is built (NaN: null)."""

_NORM_COLUMNS = (
    "n_outliers", "max_outlier_run", "continuum_iterations", "continuum_iterations_blue",
    "continuum_iterations_red",
)  # fmt: skip
"""Integer columns set for every normalised row (null elsewhere)."""

_TEXT_COLUMNS = ("status", "reason", "rv_measured_status", "rv_used_source")


def _finite(values: np.ndarray) -> np.ndarray:
    """float64 copy with every non-finite value NaN (NaN stands for null)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


class ArrayPool:
    """Float32 ``[n, 7200]`` batch arrays for reuse, handed back once a shard is written.

    A fresh array costs its first writes a page fault and the kernel's zeroing of
    every page (measured: ~8% of the pipeline's CPU); a shard's arrays are free
    again once the writer has them on disk. Holds at most ``keep`` arrays.
    """

    def __init__(self, keep: int = 4) -> None:
        self._free: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        """An array of ``n`` rows (content undefined)."""
        with self._lock:
            for i, array in enumerate(self._free):
                if array.shape[0] == n:
                    return self._free.pop(i)
        return np.empty((n, N_PIX), dtype=np.float32)

    def give(self, *arrays: np.ndarray | None) -> None:
        """Arrays nothing refers to any more (None is skipped)."""
        with self._lock:
            self._free.extend(a for a in arrays if a is not None)
            del self._free[: max(0, len(self._free) - self._keep)]


class _ChunkSet:
    """One chunk's kernel outputs (``norm``, ``res``: float32 ``[rows, 7200]``) and the
    file writes still reading them."""

    def __init__(self, rows: int) -> None:
        self.norm = np.empty((rows, N_PIX), dtype=np.float32)
        self.res = np.empty((rows, N_PIX), dtype=np.float32)
        self.recorded = False
        self.writes: list[Future] = []

    def free(self) -> bool:
        return self.recorded and all(f.done() for f in self.writes)

    def release(self, writes: list[Future]) -> None:
        """The chunk is recorded; its buffers are free once ``writes`` are done."""
        self.writes, self.recorded = writes, True


class ChunkBuffers:
    """Chunk-sized kernel outputs for batches whose rows go to :class:`ShardFiles` as
    they are finished: a few sets reused for the whole run, so the kernels write
    into pages touched once per run instead of fresh shard-sized arrays (whose
    first-touch zeroing was ~6 % of a one-shard run's CPU, perf)."""

    def __init__(self, rows: int | None = None, keep: int = CHUNKS_IN_FLIGHT + 2) -> None:
        self._rows = COMPUTE_CHUNK if rows is None else rows
        """Rows per set (default: :data:`COMPUTE_CHUNK`, read when the sets are made)."""
        self._keep = keep
        self._sets: deque[_ChunkSet] = deque()

    def take(self) -> _ChunkSet:
        """A free set (waiting for the oldest recorded set's writes if all are busy)."""
        for i, chunk in enumerate(self._sets):
            if chunk.free():
                del self._sets[i]
                return self._use(chunk)
        if len(self._sets) < self._keep:
            return self._use(_ChunkSet(self._rows))
        oldest = next(c for c in self._sets if c.recorded)  # at most CHUNKS_IN_FLIGHT are not
        wait(oldest.writes)
        self._sets.remove(oldest)
        return self._use(oldest)

    def _use(self, chunk: _ChunkSet) -> _ChunkSet:
        chunk.recorded, chunk.writes = False, []
        self._sets.append(chunk)
        return chunk


class BatchBuilder:
    """Collects the arms of one batch, runs the kernels in chunks, assembles the result.

    The manifest columns are numpy arrays filled a chunk at a time (float NaN and a
    validity mask stand for null); only failed rows are visited one by one.
    """

    def __init__(
        self,
        plan: BatchPlan,
        settings: PreprocessSettings,
        keep_resampled: bool,
        rv_errors: tuple[str, np.ndarray] | None = None,
        submit: Callable[..., Future | Immediate] = lambda fn, *args: Immediate(fn(*args)),
        arrays: ArrayPool | None = None,
        files: ShardFiles | None = None,
        buffers: ChunkBuffers | None = None,
    ):
        n = plan.stop - plan.start
        if files is not None and buffers is None:
            raise ValueError("rows written to files as they are finished need chunk buffers")
        self.files = files
        """Where finished rows are written as they come (None: the caller writes the batch)."""
        self.buffers = buffers if files is not None else None
        """Chunk outputs reused across chunks (only with ``files``); None: shard arrays."""
        self.keep_resampled = keep_resampled
        self._submit = submit
        self._inflight: deque[Future | Immediate] = deque()
        self.plan = plan
        self.settings = settings
        self.rv_errors = rv_errors
        """``(rv_mode, catalogue RV error of every catalogue row)``; None: no RV decision."""
        # Written by the compute thread row by row (first touch there); the rows no
        # kernel wrote are set to NaN by finish().
        arrays = arrays or ArrayPool(0)
        compact = self.buffers is not None
        self.normalized = None if compact else arrays.take(n)
        self.resampled = arrays.take(n) if keep_resampled and not compact else None
        self.was_resampled = np.zeros(n, dtype=bool)
        self.floats = {name: np.full(n, np.nan) for name in _FLOAT_COLUMNS}
        self.ints = {name: np.zeros(n, dtype=np.int64) for name in _NORM_COLUMNS}
        self.cap_hit = np.zeros(n, dtype=bool)
        self.normed = np.zeros(n, dtype=bool)
        """Rows the normalisation ran on (their integer columns and cap_hit are set)."""
        self.disagree = np.zeros(n, dtype=bool)
        self.decided = np.zeros(n, dtype=bool)
        """Rows whose RV was decided (their rv_disagree is set)."""
        self.text = {name: np.full(n, None, dtype=object) for name in _TEXT_COLUMNS}
        self.text["status"][:] = "ok"
        self.headers: list[dict] = []
        """Header values of each file added, then an all-null one for rows without a file."""
        self.header_of = np.full(n, -1, dtype=np.int64)
        self._pending: list[tuple[int, tuple, tuple, float]] = []
        self.fallbacks: list[tuple[str, str]] = []
        for row, (status, why) in plan.early.items():
            self._fail(row - plan.start, status, why)
            if status == "bad_rv":  # --rv catalog without a usable one: no RV was used
                self.text["rv_used_source"][row - plan.start] = "none"

    def _fail(self, pos: int, status: str, why: str) -> None:
        self.text["status"][pos] = status
        self.text["reason"][pos] = why

    def add(self, job: Job, result: tuple) -> None:
        file_error, header, arms, fallback = result
        assert job.args is not None  # a file job (the batch's end marker has none)
        if fallback is not None:
            self.fallbacks.append((job.args[0], fallback))
            log.warning("read %s with fitsio: %s", job.args[0], fallback)
        notes = header.get(NOTES_KEY, {})
        self.headers.append(header)
        file_index = len(self.headers) - 1
        snr_blue, snr_red = self.floats["snr_blue"], self.floats["snr_red"]
        for row, blue, red, rv in job.rows:
            pos = row - self.plan.start
            self.header_of[pos] = file_index
            if notes:
                why = [n for key in ("", blue, red) for n in notes.get(key, ())]
                if why:  # unconvertible header values: null, and said so on the row
                    self.text["reason"][pos] = "; ".join(why)
            if file_error is not None:
                self._fail(pos, *file_error)
                continue
            blue_arm, red_arm = arms[blue], arms[red]
            if len(blue_arm) == 4 and blue_arm[3] is not None:
                snr_blue[pos] = blue_arm[3]
            if len(red_arm) == 4 and red_arm[3] is not None:
                snr_red[pos] = red_arm[3]
            if len(blue_arm) == 2 or len(red_arm) == 2:
                self._fail(pos, *(blue_arm if len(blue_arm) == 2 else red_arm))
                continue
            self._pending.append((pos, blue_arm, red_arm, rv))
            if len(self._pending) >= COMPUTE_CHUNK:
                self._compute()

    def _compute(self) -> None:
        """Hand the pending spectra to the kernels (on the compute thread, if any).

        The main thread goes on reading while they run; at most
        :data:`CHUNKS_IN_FLIGHT` chunks are out, applied in the order submitted.
        """
        if not self._pending:
            return
        chunk, self._pending = self._pending, []
        buffers = self.buffers.take() if self.buffers is not None else None
        out = (self.normalized, self.resampled) if buffers is None else buffers
        args = (chunk, self.settings, self.rv_errors, self.plan.start, out)
        self._inflight.append(self._submit(_run_kernels, *args))
        while len(self._inflight) > CHUNKS_IN_FLIGHT:
            self._apply(self._inflight.popleft().result())

    def _apply(self, done: _ChunkResult) -> None:
        """Record a chunk's RV decision and kernel outputs in the batch (and hand its
        chunk buffers back once their rows are written)."""
        writes = self._record(done)
        if done.buffers is not None:
            done.buffers.release(writes)

    def _record(self, done: _ChunkResult) -> list[Future]:
        """:meth:`_apply`'s work; the file writes it started."""
        if done.rv is not None:
            self._apply_rv(done.pending, done.rv)
        res = done.resampled
        if res is None:
            return []
        kept = done.kept
        pos = np.array([p[0] for p in kept])
        self.was_resampled[pos] = True
        self.floats["snr_blue_ivar"][pos] = _finite(res.snr_blue)
        self.floats["snr_red_ivar"][pos] = _finite(res.snr_red)
        ok = res.status == Status.OK
        for i in np.flatnonzero(~ok):
            _, b, r, rv = kept[i][:4]
            rv = rv if self.settings.correct_rv else 0.0
            self._fail(pos[i], *_kernel_failure(res.status[i], "resampling", b, r, rv))
        if done.normalized is not None:
            raw = [kept[i][1:3] for i in np.flatnonzero(ok)]  # (blue, red) of each normalised
            self._store_normalized(pos[ok], raw, done.normalized, done.buffers)
        if self.files is None or done.buffers is None:
            return []
        # These rows' values are final: to the files (chunk buffers: kept spectrum i in
        # row i, the j-th normalised one in row j).
        chunk = done.buffers
        writes = []
        if self.keep_resampled:
            writes += self.files.write("resampled", chunk.res, pos, np.arange(pos.size))
        if done.normalized is not None:
            writes += self.files.write("normalized", chunk.norm, pos[ok], np.arange(int(ok.sum())))
        return writes

    def _apply_rv(self, pending: list[tuple], got: rv_policy.RvResult) -> None:
        """Record the RV measured and chosen for each spectrum; fail those without one."""
        assert self.rv_errors is not None  # RVs are decided only with rv_errors
        pos = np.array([p[0] for p in pending])
        d = got.decision
        f = self.floats
        f["rv_measured"][pos] = _finite(got.measured)
        f["rv_measured_err"][pos] = _finite(got.measured_err)
        for k, name in enumerate(("teff", "logg", "feh")):
            f[f"rv_template_{name}"][pos] = _finite(got.template_labels[:, k])
        f["rv_used"][pos] = _finite(d.used)
        self.text["rv_measured_status"][pos] = got.status
        self.text["rv_used_source"][pos] = d.source
        self.disagree[pos] = d.disagree
        self.decided[pos] = True
        for i in (i for i, source in enumerate(d.source) if source == "none"):
            data = got.data_status
            if data is not None and data[i] != Status.OK:  # the spectrum, not its RV
                _, b, r = pending[i][:3]
                self._observed_snr(pos[i], b, r)
                stage = "resampling (observed frame, to measure the RV)"
                self._fail(pos[i], *_kernel_failure(data[i], stage, b, r, 0.0))
                continue
            why = f"no usable RV (catalogue {pending[i][3]!r} km/s, measurement {got.status[i]})"
            self._fail(pos[i], "bad_rv", f"{self.rv_errors[0]} RV: {why}")

    def _note_snr_disagreement(self, arm: str, header: np.ndarray, estimate: np.ndarray) -> None:
        """Say on each row whose header SNR and FLUX/IVAR estimate disagree which was used."""
        reasons = self.text["reason"]
        for i in np.flatnonzero(snr_disagrees(header, estimate)):
            note = (
                f"{arm} arm: header SNR {header[i]:.1f} and the FLUX/IVAR estimate "
                f"{estimate[i]:.1f} disagree; the lower is used"
            )
            reasons[i] = f"{reasons[i]}; {note}" if reasons[i] else note

    def _observed_snr(self, pos: int, blue: tuple, red: tuple) -> None:
        """The FLUX/IVAR S/N of a spectrum that fails before the RV shift (it is the arms'
        whatever the spectrum's fate; pixels in the grid window of the observed frame)."""
        for name, arm, grid in (
            ("snr_blue_ivar", blue, BLUE_GRID),
            ("snr_red_ivar", red, RED_GRID),
        ):
            if len(arm) > 2 and arm[2] is not None:
                try:
                    value = snr_ivar(arm[0], arm[1], arm[2], 0.0, grid)
                except (PreprocessError, ValueError):  # arrays the reader let through
                    continue  # unknown: null, as for any arm without usable IVAR
                self.floats[name][pos] = _finite(np.asarray(value))

    def _store_normalized(
        self,
        pos: np.ndarray,
        raw: list,
        norm: NormalizeResult,
        buffers: _ChunkSet | None = None,
    ) -> None:
        """Keep the statistics of the rows normalised at ``pos`` (their flux is in place:
        the batch's rows ``pos``, or rows ``0..pos.size`` of the chunk ``buffers``);
        ``raw``: their raw (blue, red) arms, which a failure's reason describes."""
        iterations = np.asarray(norm.iterations, dtype=np.int64)
        self.ints["n_outliers"][pos] = norm.n_outliers
        self.ints["max_outlier_run"][pos] = norm.max_outlier_run
        self.ints["continuum_iterations_blue"][pos] = iterations[:, 0]
        self.ints["continuum_iterations_red"][pos] = iterations[:, 1]
        self.ints["continuum_iterations"][pos] = iterations.max(axis=1)
        self.cap_hit[pos] = norm.cap_hit
        self.normed[pos] = True
        for j in np.flatnonzero(norm.status != Status.OK):
            blue, red = raw[j]
            self._fail(pos[j], *_kernel_failure(norm.status[j], "normalisation", blue, red, 0.0))
            if buffers is not None:
                buffers.norm[j] = np.nan
            elif self.normalized is not None:
                self.normalized[pos[j]] = np.nan

    def finish(
        self, catalog: pl.DataFrame, quality: QualityCuts, header_columns: list[str]
    ) -> PreprocessedBatch:
        self._compute()
        while self._inflight:
            self._apply(self._inflight.popleft().result())
        if self.normalized is not None:
            self.normalized[~self.normed] = np.nan
        if self.resampled is not None:
            self.resampled[~self.was_resampled] = np.nan
        if self.files is not None:  # the rest of the rows (every other row is written)
            self._write_rest()
        plan = self.plan
        n = plan.stop - plan.start
        rows = np.arange(plan.start, plan.stop, dtype=np.int64)
        f = self.floats
        for name, arm in (("snr_blue", "blue"), ("snr_red", "red")):
            self._note_snr_disagreement(arm, f[name], f[f"{name}_ivar"])
            f[name] = snr_rule(f[name], f[f"{name}_ivar"])
        ok = self.text["status"] == "ok"
        passed, why = _quality(ok, self.text["status"], f, self.ints, quality)
        columns: dict[str, pl.Series] = {
            "row": pl.Series(rows),
            "shard": pl.Series(np.full(n, plan.index, dtype=np.int64)),
            "offset": pl.Series(np.arange(n, dtype=np.int64)),
            "cap_hit": _masked(self.cap_hit, self.normed),
            "rv_disagree": _masked(self.disagree, self.decided),
            "quality_ok": pl.Series(passed),
            "quality_reason": pl.Series(why, dtype=pl.Utf8),
        }
        columns |= {k: pl.Series(v, nan_to_null=True) for k, v in f.items()}
        columns |= {k: _masked(v, self.normed) for k, v in self.ints.items()}
        columns |= {k: pl.Series(v.tolist(), dtype=pl.Utf8) for k, v in self.text.items()}
        added = pl.DataFrame([columns[name].alias(name) for name in MANIFEST_SCHEMA]).cast(
            pl.Schema(MANIFEST_SCHEMA)
        )
        manifest = pl.concat(
            [catalog.slice(plan.start, n), self._header_frame(header_columns), added],
            how="horizontal",
        ).select(["row", *catalog.columns, *header_columns, *list(MANIFEST_SCHEMA)[1:]])
        return PreprocessedBatch(
            plan.index, rows, manifest, self.normalized, self.resampled, self.fallbacks, self.files
        )

    def _write_rest(self) -> None:
        """Write the rows no chunk wrote (all NaN) to the files."""
        assert self.files is not None
        rest = {"normalized": np.flatnonzero(~self.normed)}
        if self.keep_resampled:
            rest["resampled"] = np.flatnonzero(~self.was_resampled)
        nan = np.full((max(r.size for r in rest.values()), N_PIX), np.nan, dtype=np.float32)
        for kind, rows in rest.items():
            self.files.write(kind, nan, rows, np.arange(rows.size))

    def _header_frame(self, header_columns: list[str]) -> pl.DataFrame:
        """The primary-header columns of each row (null for rows without a file read)."""
        schema = {c: HEADER_COLUMNS[c] for c in header_columns}
        per_file = pl.DataFrame(
            {c: [h.get(c) for h in self.headers] + [None] for c in header_columns},
            schema=schema,
        )
        index = np.where(self.header_of < 0, len(self.headers), self.header_of)
        return per_file[index] if header_columns else pl.DataFrame(schema=schema)


@dataclass
class _ChunkResult:
    """What the kernels made of one chunk of pending spectra (see :func:`_run_kernels`)."""

    pending: list[tuple]
    rv: rv_policy.RvResult | None
    """RV measurement and decision of every pending spectrum (None: RVs not decided)."""
    kept: list[tuple]
    """The spectra resampled (those with an RV), each with the RV used."""
    resampled: ResampleResult | None
    normalized: NormalizeResult | None
    """Of the ``kept`` spectra that resampled OK, in order."""
    buffers: _ChunkSet | None = None
    """The chunk buffers the fluxes are in (None: in the batch's arrays)."""


def _run_kernels(
    pending: list[tuple],
    settings: PreprocessSettings,
    rv_errors: tuple[str, np.ndarray] | None,
    start: int,
    out: tuple[np.ndarray | None, np.ndarray | None] | _ChunkSet,
) -> _ChunkResult:
    """Decide RVs, resample and normalise a chunk, and write the fluxes of its rows
    into the batch's ``out = (normalized, resampled)`` arrays, or, given a
    :class:`_ChunkSet`, into its rows in order (resampled: kept spectrum i in row i;
    normalised: the j-th that resampled OK in row j). Runs on the compute thread,
    the kernels with the GIL released; no other batch state is touched."""
    buffers = out if isinstance(out, _ChunkSet) else None
    got, kept = None, pending
    if rv_errors is not None:
        mode, errors = rv_errors
        pos = np.array([p[0] for p in pending])
        got = rv_policy.resolve(
            mode,
            [(p[1][:3], p[2][:3]) for p in pending],
            np.array([p[3] for p in pending], dtype=np.float64),
            errors[pos + start],
        )
        used = got.decision.used.tolist()
        kept = [
            (*p[:3], float(used[i]))
            for i, p in enumerate(pending)
            if got.decision.source[i] != "none"
        ]
    if not kept:
        return _ChunkResult(pending, got, kept, None, None, buffers)
    pos = np.array([p[0] for p in kept])
    dest = (buffers.norm, buffers.res) if buffers is not None else out
    assert isinstance(dest, tuple)
    in_place = buffers.res[: pos.size] if buffers is not None else _run_rows(dest[1], pos)
    res = resample_batch(
        [p[1][0] for p in kept],
        [p[1][1] for p in kept],
        [p[2][0] for p in kept],
        [p[2][1] for p in kept],
        np.array([p[3] for p in kept], dtype=np.float64),
        blue_ivar=[p[1][2] for p in kept],
        red_ivar=[p[2][2] for p in kept],
        correct_rv=settings.correct_rv,
        out=in_place,
    )
    ok = res.status == Status.OK
    if dest[1] is not None and in_place is None:
        dest[1][pos] = res.flux
    norm = None
    if ok.any():
        ok_pos = pos if ok.all() else pos[ok]
        target = buffers.norm[: ok_pos.size] if buffers is not None else _run_rows(dest[0], ok_pos)
        norm = normalize_detailed(
            res.flux if ok.all() else res.flux[ok], max_iter=settings.max_iter, out=target
        )
        if target is None and dest[0] is not None:
            dest[0][ok_pos] = norm.flux
    return _ChunkResult(pending, got, kept, res, norm, buffers)


def _run_rows(dest: np.ndarray | None, pos: np.ndarray) -> np.ndarray | None:
    """``dest[pos]`` as a view when ``pos`` is a run of rows (the kernels then write
    the batch's rows in place, nothing allocated or copied), else None."""
    if dest is None or not pos.size or pos[-1] - pos[0] != pos.size - 1:
        return None
    if not np.all(np.diff(pos) == 1):
        return None
    return dest[pos[0] : pos[0] + pos.size]


def _masked(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    """``values`` as a Series, null where not ``valid``."""
    return pl.Series(values).zip_with(pl.Series(valid), pl.Series([None] * values.size))


SNR_DISAGREE = 2.0
"""A header SNR more than this factor from the arm's FLUX/IVAR estimate describes other
data (a file whose flux was rescaled or re-noised, its header kept): the lower of the
two is used, so that the errors and the cuts are never those of a better spectrum. On
the real file the two agree to 5-11 % (92.8 and 97.7 for the blue coadd)."""


def snr_disagrees(header: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Rows whose usable header SNR and FLUX/IVAR estimate differ by more than
    :data:`SNR_DISAGREE` (either way)."""
    header = np.asarray(header, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        both = np.isfinite(header) & (header >= 0) & np.isfinite(estimate) & (estimate >= 0)
        high = np.fmax(header, estimate)
        return both & (high > SNR_DISAGREE * np.fmin(header, estimate))


def snr_rule(header: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """The S/N of one arm that the quality cut uses (the one documented rule), per row.

    ``estimate`` is the FLUX/IVAR estimate (median ``FLUX*sqrt(IVAR)`` over pixels
    with finite positive IVAR); NaN when the arm has no such pixel. An arm whose
    IVAR is all zero, negative or NaN cannot be trusted whatever its header says:
    NaN. Otherwise the header SNR when it is a finite number >= 0, else the
    estimate; the lower of the two when they differ by more than
    :data:`SNR_DISAGREE` (:func:`snr_disagrees`). NaN (null in the manifest) fails
    the cut ("no usable S/N") and sets LOW_SNR downstream.
    """
    header = np.asarray(header, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(header) & (header >= 0)
    chosen = np.where(usable, header, estimate)
    chosen = np.where(snr_disagrees(header, estimate), np.fmin(header, estimate), chosen)
    return np.where(np.isnan(estimate), np.nan, chosen)


def _kernel_status(code: int, stage: str) -> tuple[str, str]:
    name = next((v for k, v in KERNEL_STATUS_NAMES.items() if k == int(code)), "bad_flux")
    return name, f"{stage}: {reason(code)}"


def _kernel_failure(code: int, stage: str, blue: tuple, red: tuple, rv: float) -> tuple[str, str]:
    """:func:`_kernel_status` with what in which raw arm (``(loglam, flux, ...)``) caused
    it; ``rv``: the shift the grid was resampled at (0 for the observed frame)."""
    status, why = _kernel_status(code, stage)
    if code == Status.GRID_OUT_OF_RANGE:
        detail = range_detail(blue[0], red[0], rv, rv != 0.0)
    else:
        detail = arm_detail(int(code), blue, red)
    return status, f"{why} ({detail})" if detail else why


def _quality(
    ok: np.ndarray,
    status: np.ndarray,
    floats: dict[str, np.ndarray],
    ints: dict[str, np.ndarray],
    cuts: QualityCuts,
) -> tuple[np.ndarray, list[str | None]]:
    """``quality_ok`` and ``quality_reason`` of every row (reasons built for failing rows only)."""
    snr_b, snr_r = floats["snr_blue"], floats["snr_red"]
    n_out, run = ints["n_outliers"], ints["max_outlier_run"]
    no_snr = np.isnan(snr_b) | np.isnan(snr_r)
    low = ~no_snr & (np.fmin(snr_b, snr_r) < cuts.min_snr)
    bad = ~ok | (ok & (no_snr | low | (n_out > cuts.max_outliers) | (run > cuts.max_outlier_run)))
    reasons: list[str | None] = [None] * ok.size
    for i in np.flatnonzero(bad):
        if not ok[i]:
            reasons[i] = f"status {status[i]}"
            continue
        why = []
        if no_snr[i]:
            why.append("no usable S/N (IVAR all zero, negative or NaN)")
        elif low[i]:
            why.append(f"snr {min(snr_b[i], snr_r[i]):.1f} < {cuts.min_snr:g}")
        if n_out[i] > cuts.max_outliers:
            why.append(f"n_outliers {n_out[i]} > {cuts.max_outliers}")
        if run[i] > cuts.max_outlier_run:
            why.append(f"max_outlier_run {run[i]} > {cuts.max_outlier_run}")
        reasons[i] = "; ".join(why)
    return ~bad, reasons
