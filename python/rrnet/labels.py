"""Label names, groups and units, and a safe reader for the authors' ``label_config.pkl``."""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Stellar parameters predicted by the SP models, in the authors' order.
SP_LABELS: tuple[str, ...] = ("Teff[K]", "Logg", "FeH")
#: Abundances [X/H] predicted by the CA models, in the authors' order.
CA_LABELS: tuple[str, ...] = (
    "CH", "NH", "OH", "MgH", "AlH", "SiH", "SH", "KH", "CaH", "TiH", "CrH", "MnH", "NiH", "CuH",
)  # fmt: skip
#: All 17 catalogue labels in catalogue (paper Table 3) order.
ALL_LABELS: tuple[str, ...] = (
    "Teff[K]", "Logg", "CH", "NH", "OH", "MgH", "AlH", "SiH", "SH", "KH", "CaH", "TiH", "CrH",
    "MnH", "FeH", "NiH", "CuH",
)  # fmt: skip
#: Identifier-safe catalogue name of every label (the default ``--column-style``), in the
#: style of LAMOST's and the Virtual Observatory's catalogues: usable unquoted in
#: TOPCAT/STILTS expressions, SQL/ADQL and as Python attributes. The one table of names:
#: catalogue writers apply it, readers (``rrnet-eval``) undo it.
IDENTIFIER_NAMES: dict[str, str] = {
    "Teff[K]": "teff", "Logg": "logg", "CH": "c_h", "NH": "n_h", "OH": "o_h", "MgH": "mg_h",
    "AlH": "al_h", "SiH": "si_h", "SH": "s_h", "KH": "k_h", "CaH": "ca_h", "TiH": "ti_h",
    "CrH": "cr_h", "MnH": "mn_h", "FeH": "fe_h", "NiH": "ni_h", "CuH": "cu_h",
}  # fmt: skip
#: Catalogue column-name styles: ``identifier`` (default) or ``paper`` (Table 3's names).
COLUMN_STYLES: tuple[str, ...] = ("identifier", "paper")
DEFAULT_COLUMN_STYLE: str = "identifier"
#: Suffixes of the columns derived from a label (catalogue, per-star table, evaluation).
LABEL_SUFFIXES: tuple[str, ...] = ("", "_err", "_scatter", "_chi2r", "_n", "_true")
#: The authors' two model groups.
GROUPS: dict[str, tuple[str, ...]] = {"SP": SP_LABELS, "CA": CA_LABELS}

#: Surveys' "not measured" (LAMOST, APOGEE, GALAH write -9999): a missing label, never a
#: value (a Teff of -9999 K trained as one would wreck the network).
MISSING_LABEL: float = -9999.0
#: At or below this a value is a sentinel, also after arithmetic ([X/Fe] of -9999 plus
#: [Fe/H] is -9999.3): no label is (Teff > 0 K, log g > -1, [X/H] > -10 dex).
MISSING_AT_OR_BELOW: float = -999.0


def missing_labels(values: np.ndarray) -> np.ndarray:
    """Where ``values`` hold no label: NaN, infinite, or a sentinel (at or below
    :data:`MISSING_AT_OR_BELOW`, e.g. :data:`MISSING_LABEL`)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values <= MISSING_AT_OR_BELOW)


#: Physical unit of every label.
UNITS: dict[str, str] = {"Teff[K]": "K", "Logg": "dex (cgs)"} | {
    name: "dex" for name in ALL_LABELS if name not in ("Teff[K]", "Logg")
}

#: Plain-text names for people (tables, captions), keyed by the internal label name.
DISPLAY_NAMES: dict[str, str] = {"Teff[K]": "T_eff", "Logg": "log g"} | {
    name: f"[{name[:-1]}/H]" for name in ALL_LABELS if name not in ("Teff[K]", "Logg")
}

#: Unit shown after a display name: K for T_eff, dex otherwise.
DISPLAY_UNITS: dict[str, str] = {name: "K" if name == "Teff[K]" else "dex" for name in ALL_LABELS}


def display_name(label: str, *, with_unit: bool = False) -> str:
    """``"[C/H]"`` or, with the unit, ``"[C/H] [dex]"``; unknown names come back unchanged."""
    name = DISPLAY_NAMES.get(label, label)
    if with_unit and label in DISPLAY_UNITS:
        return f"{name} [{DISPLAY_UNITS[label]}]"
    return name


#: Suffix of the reference-label columns (``<label>_true``) of an evaluation sample.
TRUE_SUFFIX: str = "_true"

#: Keys a valid label_config must hold.
LABEL_CONFIG_KEYS: tuple[str, ...] = (
    "label_list",
    "label_mean",
    "label_std",
    "flux_mean",
    "flux_std",
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that a plain dict of lists and arrays never needs."""


# Exactly what NumPy's ndarray/dtype/scalar pickling references, for NumPy 1.x and 2.x.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``.

    Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
    before it can be called, so a malicious file is refused, never executed.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: label_config.pkl may only contain "
            "plain dicts, lists, strings, numbers and NumPy arrays"
        )


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only builtins containers and NumPy arrays/scalars."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def read_label_config(path: str | Path) -> dict[str, Any]:
    """Read the authors' ``label_config.pkl`` safely.

    Returns
    -------
    dict
        ``label_list`` (list of str), ``label_mean``/``label_std`` (float64 arrays, one
        entry per label) and ``flux_mean``/``flux_std`` (float32 arrays, one per pixel).

    Raises
    ------
    UnsafePickleError
        If the file references anything but NumPy arrays and builtin containers.
    ValueError
        If a required key is missing or the array lengths disagree.
    """
    try:
        data = safe_unpickle(Path(path).read_bytes())
    except UnsafePickleError:
        raise
    except Exception as exc:  # arbitrary bytes raise almost any error in the unpickler
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: not a label_config.pkl (unreadable pickle: {first})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict, got {type(data).__name__}")
    missing = [key for key in LABEL_CONFIG_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    out = dict(data)
    out["label_list"] = [str(name) for name in data["label_list"]]
    for key in ("label_mean", "label_std"):
        out[key] = np.asarray(data[key], dtype=np.float64)
        if out[key].shape != (len(out["label_list"]),):
            raise ValueError(
                f"{path}: {key} has shape {out[key].shape}, expected ({len(out['label_list'])},)"
            )
    for key in ("flux_mean", "flux_std"):
        out[key] = np.asarray(data[key], dtype=np.float32)
    if out["flux_mean"].shape != out["flux_std"].shape or out["flux_mean"].ndim != 1:
        raise ValueError(
            f"{path}: flux_mean {out['flux_mean'].shape} and flux_std {out['flux_std'].shape} "
            "must be equal-length vectors"
        )
    return out


def label_indices(label_list: Sequence[str], names: Sequence[str]) -> list[int]:
    """Positions of ``names`` in ``label_list``; a missing name is an error that names it."""
    missing = [name for name in names if name not in label_list]
    if missing:
        raise KeyError(f"label(s) not in label_list: {', '.join(missing)}")
    return [list(label_list).index(name) for name in names]


def _split_label(name: str, table: dict[str, str]) -> tuple[str, str] | None:
    """``(label, suffix)`` when ``name`` is a key of ``table`` plus a known suffix."""
    for suffix in LABEL_SUFFIXES:
        stem = name[: len(name) - len(suffix)] if suffix else name
        if name.endswith(suffix) and stem in table:
            return stem, suffix
    return None


def check_column_style(style: str) -> str:
    """``style`` if it is one of :data:`COLUMN_STYLES` (ValueError naming them otherwise)."""
    if style not in COLUMN_STYLES:
        raise ValueError(
            f"unknown column style {style!r}; expected one of {', '.join(COLUMN_STYLES)}"
        )
    return style


def styled_name(name: str, style: str) -> str:
    """The catalogue name of internal column ``name`` (paper label names) in ``style``."""
    check_column_style(style)
    split = _split_label(name, IDENTIFIER_NAMES) if style == "identifier" else None
    return IDENTIFIER_NAMES[split[0]] + split[1] if split else name


def internal_name(name: str) -> str:
    """Undo :func:`styled_name`: a column name of either style -> the internal (paper) name."""
    split = _split_label(name, _PAPER_NAMES)
    return _PAPER_NAMES[split[0]] + split[1] if split else name


_PAPER_NAMES: dict[str, str] = {v: k for k, v in IDENTIFIER_NAMES.items()}


def catalogue_label(name: str) -> str:
    """The internal name of a label written in either column style and in any case
    (``Teff[K]``, ``teff``, ``TEFF`` -> ``Teff[K]``; ``FE_H``, ``FEH`` -> ``FeH``), so that a
    labels table named like an rrnet catalogue or a survey's ``TEFF``/``FE_H`` columns
    trains the catalogue's labels; any other name comes back unchanged."""
    for candidate in (name, internal_name(name), internal_name(name.lower())):
        if candidate in ALL_LABELS:
            return candidate
    return _PAPER_ANY_CASE.get(name.lower(), name)  # FEH, MGH, teff[k]


_PAPER_ANY_CASE: dict[str, str] = {label.lower(): label for label in ALL_LABELS}


def label_spellings(name: str) -> str:
    """A label's column names that :func:`catalogue_label` accepts, for messages:
    ``MgH`` -> ``MgH (or mg_h, MG_H)``; any other name unchanged."""
    if name not in IDENTIFIER_NAMES:
        return name
    ident = IDENTIFIER_NAMES[name]
    return f"{name} (or {ident}, {ident.upper()})"


def styled_columns(names: Sequence[str], style: str) -> dict[str, str]:
    """Internal -> styled name of every column; ValueError when two columns would clash.

    A carried input column already named like a styled label (say ``teff``) clashes.
    """
    mapping = {name: styled_name(name, style) for name in names}
    seen: dict[str, str] = {}
    for old, new in mapping.items():
        if new in seen:
            raise ValueError(
                f"columns {seen[new]!r} and {old!r} would both be named {new!r} with "
                f"--column-style {style}: rename the input column or use another column style"
            )
        seen[new] = old
    return mapping


def label_columns(
    columns: Sequence[str], wanted: Sequence[str] = ALL_LABELS, keep: Sequence[str] = ()
) -> dict[str, str]:
    """Renames that give the columns of the ``wanted`` labels their internal names when a
    table has them in another style or case (``teff``, ``TEFF`` -> ``Teff[K]``; a label
    that is no catalogue label in another case, ``vsini`` -> ``VSINI``); columns
    in ``keep`` (join keys) are left alone. Two columns for one label are a ValueError
    (which one was meant is not knowable)."""
    by_label: dict[str, list[str]] = {}
    folded = {w.lower(): w for w in wanted}  # a label of one's own (vsini) in any case too
    for column in columns:
        label = catalogue_label(column)
        if (
            label not in wanted
            and column.lower() in folded
            and folded[column.lower()] not in columns
        ):
            label = folded[column.lower()]  # only where the asked spelling is no column
        if column not in keep and label in wanted:
            by_label.setdefault(label, []).append(column)
    for label, found in by_label.items():
        if len(found) > 1:
            raise ValueError(
                f"the labels table has {len(found)} columns for {label}: "
                f"{', '.join(found)}; keep one"
            )
    return {found[0]: label for label, found in by_label.items() if found[0] != label}


def internal_columns(names: Sequence[str]) -> dict[str, str]:
    """Styled -> internal name of the columns that :func:`internal_name` renames."""
    out = {name: internal_name(name) for name in names}
    return {k: v for k, v in out.items() if k != v and v not in names}
