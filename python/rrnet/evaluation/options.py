"""The options of one evaluation run (what ``rrnet-eval`` maps its flags onto)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("test", "valid", "train", "all")


DEFAULT_REPEAT_KEY = "star_id"
"""Without this column the repeat analysis is skipped with a note; another, named, must exist."""


@dataclass(frozen=True)
class EvalOptions:
    """Inputs of :func:`evaluate` (the CLI maps its flags one to one onto these).

    ``checkpoints`` are ensemble checkpoint directories (typically SP and CA); they
    must share one split by star, which selects the evaluated stars (``split``).
    """

    catalog: Path
    labels: Path
    out: Path
    key: tuple[str, ...] = ("star_id",)
    snr: str = "snr_blue"
    all_rows: bool = False
    repeat_key: str = DEFAULT_REPEAT_KEY
    min_exposures: int = 2
    checkpoints: tuple[Path, ...] = ()
    split: str = "test"
    recalibrate: bool = False
    store: Path | None = None
    isochrones: Path | None = None
    saliency_spectra: int = 200
    figures: bool = True

    def __post_init__(self) -> None:
        from rrnet.io.catalog import key_columns

        object.__setattr__(self, "key", key_columns(self.key))  # "obsid" is one column
