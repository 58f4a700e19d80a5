"""What a catalogue run is asked to do, shared by ``infer``, ``run_inference`` and ``run_cluster``.

One frozen :class:`InferOptions` replaces the parameter lists the three entry points
used to copy; :func:`check_options` and :func:`load_checked` are the checks they
all make (checkpoints present and loadable, sizes positive, preprocessing fingerprints
matching), written once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityThresholds
from rrnet.labels import COLUMN_STYLES, DEFAULT_COLUMN_STYLE
from rrnet.preprocess.settings import MAX_ITER_LIMIT
from rrnet.utils.faults import is_machine_fault

PathLike = str | os.PathLike[str]

DEFAULT_CHUNK_ROWS: int = 4096
"""Catalogue rows per part file when preprocessing on the fly."""


class InferError(ValueError):
    """Unusable arguments or an inconsistent output directory (one-line message)."""


@dataclass(frozen=True)
class InferOptions:
    """Models, settings and output choices of one catalogue run (not its input or output).

    ``models``: checkpoint directories (one path or several; the first predicting a
    label wins). ``fmt``: output format (default: from the suffix). ``batch_size``:
    spectra per forward call (default: the ensemble's choice for the device).
    ``chunk_rows``: catalogue rows per part file when preprocessing on the fly
    (``resume`` needs the same value). ``per_star``/``star_column``/``per_star_out``:
    also write a per-star table. ``preprocess``: on-the-fly preprocessing options of
    :func:`rrnet.preprocess.pipeline.iter_preprocessed` (``rv_column``, ``correct_rv``,
    ``max_iter``). ``column_style``: catalogue column names, ``"identifier"``
    (``teff``, ``fe_h``, ...) or ``"paper"`` (Table 3's ``Teff[K]``, ``FeH``, ...).
    ``calibrate``: scale the errors by each checkpoint's ``calibration.json`` (False:
    paper eq. 3 errors, uncalibrated). ``error_floor``: the per-star table's error part
    that does not average down (:func:`resolve_error_floor`; default ``"auto"``, the
    calibration's). ``precision``: ``"fp32"`` (exact; the default),
    ``"tf32"`` or ``"bf16"`` (faster on a GPU; their shifts are in docs/models.md).
    ``compile``: ``torch.compile`` the ensembles (a GPU's fastest setting).
    """

    models: tuple[PathLike, ...]
    fmt: str | None = None
    batch_size: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    per_star: bool = False
    star_column: str = "star_id"
    per_star_out: PathLike | None = None
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS
    allow_fingerprint_mismatch: bool = False
    workers: int | None = None
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = False
    column_style: str = DEFAULT_COLUMN_STYLE
    calibrate: bool = True
    error_floor: Mapping[str, float] | str | None = "auto"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        models = self.models
        paths = (models,) if isinstance(models, str | os.PathLike) else tuple(models)
        object.__setattr__(self, "models", paths)
        object.__setattr__(self, "preprocess", dict(self.preprocess or {}))

    def arithmetic_identity(self) -> dict[str, Any]:
        """Precision and compile as a run's record holds them, so that a resume never
        mixes parts of another arithmetic; empty for exact fp32 eager (the records of
        runs made before these options existed still match)."""
        return {
            **({} if self.precision == "fp32" else {"precision": self.precision}),
            **({"compile": True} if self.compile else {}),
        }

    @classmethod
    def of(
        cls, models: InferOptions | PathLike | Sequence[PathLike], **settings: Any
    ) -> InferOptions:
        """``models`` if already options (with ``settings`` replaced), else new options.

        The keyword convenience of the entry points: ``infer(paths, device="cpu")``
        and ``infer(InferOptions(paths), device="cpu")`` are the same run.
        """
        if isinstance(models, InferOptions):
            return dataclasses.replace(models, **settings)
        return cls(models=models, **settings)  # type: ignore[arg-type]


def check_options(options: InferOptions, out: PathLike) -> str:
    """Refuse unusable options before any work; return the resolved output format."""
    from rrnet.inference.writers import resolve_format
    from rrnet.models.config import PRECISIONS
    from rrnet.models.device import device_problem

    try:
        fmt = resolve_format(out, options.fmt)
    except ValueError as exc:
        raise InferError(str(exc)) from exc
    if not options.models:
        raise InferError("give at least one --model checkpoint")
    quantile = options.thresholds.ood_quantile
    if not 0.0 < quantile < 1.0:  # a validation quantile (it was "cannot load checkpoint")
        raise InferError(f"--ood-quantile must lie strictly between 0 and 1, got {quantile}")
    spread = options.thresholds.max_disagreement
    if not 0.0 < spread < math.inf:  # 0 or less flagged every row "members disagree"
        raise InferError(f"--max-disagreement must be a finite number > 0, got {spread}")
    if (problem := device_problem(options.device)) is not None:  # a missing GPU: usage
        raise InferError(problem)
    if options.precision not in PRECISIONS:
        raise InferError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if (options.batch_size is not None and options.batch_size < 1) or options.chunk_rows < 1:
        raise InferError("--batch-size and --chunk-rows must be positive")
    if options.column_style not in COLUMN_STYLES:
        raise InferError(f"--column-style must be one of {', '.join(COLUMN_STYLES)}")
    if options.workers is not None and options.workers < 0:
        raise InferError(f"--workers must be >= 0, got {options.workers}")
    for name, value in options.thresholds.to_dict().items():
        if isinstance(value, float | int) and not math.isfinite(value):
            raise InferError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    max_iter = options.preprocess.get("max_iter")
    if max_iter is not None and not 1 <= max_iter <= MAX_ITER_LIMIT:
        raise InferError(f"--max-iter must lie in 1..{MAX_ITER_LIMIT}, got {max_iter}")
    for path in options.models:
        if not (Path(path) / "config.json").is_file():
            raise InferError(
                f"not an rrnet checkpoint (no config.json): {path}; the authors' released "
                "weights become one with rrnet-import-original"
            )
    if options.error_floor is not None:
        resolve_error_floor(options)
    return fmt


FLOOR_FROM_CALIBRATION = "calibration"
"""``error_floor`` value: take each label's floor from the checkpoints' calibration."""
FLOOR_AUTO = "auto"
"""``error_floor`` default: the calibration's floors with calibrated errors, none with raw
ones. Without a floor the whole error averages down over a star's spectra, and on the
demo the combined errors were ~2x too small (z std 1.9-2.2: most of the error is model
error shared by a star's spectra)."""
FLOOR_NONE = "none"
"""``error_floor`` value: no floor, the whole error averages down (as before 2026-12-05)."""
FLOOR_CHOICES = (FLOOR_AUTO, FLOOR_FROM_CALIBRATION, FLOOR_NONE)


def resolve_error_floor(options: InferOptions) -> dict[str, float] | None:
    """The per-star floor ``{internal label: sigma}`` of ``options`` (InferError if unusable).

    ``"calibration"``: for each label, the ``shared`` part (fitted on repeat spectra
    of validation stars), else the ``floor``, of the first checkpoint whose
    ``calibration.json`` has the label (0 when it has neither). That floor is part
    of the calibrated errors, so it needs them (refused with ``calibrate=False``).
    ``"auto"`` (the default): ``"calibration"`` with calibrated errors, else none;
    ``"none"`` or None: none.
    """
    from rrnet.labels import ALL_LABELS, internal_name

    floor = options.error_floor
    if floor is None or floor == FLOOR_NONE:
        return None
    if isinstance(floor, str):
        if floor not in FLOOR_CHOICES:
            raise InferError(
                f"--error-floor must be LABEL=SIGMA, 'calibration' or 'none', got {floor!r}"
            )
        if not options.calibrate:
            if floor == FLOOR_AUTO:
                return None
            raise InferError("--error-floor calibration needs calibrated errors (no --raw-errors)")
        return _calibration_floor(options.models) or None
    out: dict[str, float] = {}
    for name, value in floor.items():
        label = internal_name(str(name))
        if label not in ALL_LABELS:
            raise InferError(f"--error-floor: unknown label {name!r}")
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise InferError(f"--error-floor: {name} needs a finite sigma >= 0, got {value!r}")
        out[label] = float(value)
    return out


def _calibration_floor(models: Sequence[PathLike]) -> dict[str, float]:
    from rrnet.models.calibration import read_calibration

    out: dict[str, float] = {}
    for path in models:
        try:
            params = read_calibration(path) or {}
        except (ValueError, KeyError) as exc:
            raise InferError(f"cannot read the calibration of {path}: {exc}") from exc
        for label, p in params.items():
            out.setdefault(label, float(p.get("shared", p.get("floor", 0.0))))
    return out


def load_checked(options: InferOptions, fingerprint: dict[str, Any], device: str) -> list[Any]:
    """The checkpoints on ``device``, each checked against the input's preprocessing.

    A checkpoint that cannot be read is an :class:`InferError`; one trained on
    differently preprocessed spectra raises
    :class:`~rrnet.inference.provenance.FingerprintMismatch` unless allowed.
    """
    from rrnet.inference.models import load_checkpoints
    from rrnet.inference.provenance import check_fingerprint

    try:
        checkpoints = load_checkpoints(
            list(options.models),
            device=device,
            thresholds=options.thresholds,
            precision=options.precision,
            compile=options.compile,
        )
    except Exception as exc:  # damaged member files, malformed config.json, foreign formats
        if is_machine_fault(exc):
            raise  # the machine, not the checkpoint
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise InferError(f"cannot load checkpoint: {type(exc).__name__}: {text}") from exc
    for checkpoint in checkpoints:
        check_fingerprint(
            str(checkpoint.path),
            checkpoint.preprocessing,
            fingerprint,
            allow_mismatch=options.allow_fingerprint_mismatch,
        )
    return checkpoints


def output_record(options: InferOptions, fmt: str) -> dict[str, Any]:
    """How a run writes its tables, kept in its record: the parts do not depend on it (a
    killed run may be finished in another format), but a finished catalogue resumed in
    another was read back in the asked one and failed, or kept the old one with exit 0."""
    return {"format": fmt, "column_style": options.column_style}


def finished_output_problem(
    out: PathLike, record: Mapping[str, Any], asked: Mapping[str, Any]
) -> str | None:
    """One line when a finished run's record says it wrote ``out`` otherwise than asked."""
    written = record.get("output")
    if not isinstance(written, Mapping) or written == asked:
        return None
    return (
        f"{out} is finished, written as {written.get('format')} in the "
        f"{written.get('column_style')} column style (asked: {asked.get('format')}, "
        f"{asked.get('column_style')}): use --overwrite to write it again"
    )
