"""What a checkpoint knows of each [X/Fe] beyond what [Fe/H] implies (issue 17).

A network can predict [X/H] with a small error while knowing nothing of the star's
own [X/Fe]: [X/H] = [Fe/H] + [X/Fe], and [Fe/H] with a Galactic trend explains most
of [X/H]. A catalogue user studying [X/Fe] (chemical tagging, alpha sequences) needs
to know which abundances carry information of their own. The skill score says it:

    skill = 1 - mean((p - t)^2) / mean((t - b)^2)

with ``t`` the reference [X/Fe] = [X/H] - [Fe/H], ``p`` the predicted one (the
predicted [X/H] minus the predicted [Fe/H]) and ``b`` the least-squares cubic in the
reference [Fe/H] fitted to ``t`` on the same rows (what [Fe/H] alone tells). 1: the
star's own [X/Fe] is recovered; 0: no better than [Fe/H] and a trend (the predicted
[X/Fe] scatter is then the trend's, not the star's); below 0: worse (noise).

Measured on the validation split by the training step (stored per label in
``calibration.json`` as ``xfe_skill``), repeated in the catalogue's provenance, and on
the evaluated split per S/N bin by ``rrnet-eval``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rrnet.labels import CA_LABELS, display_name

FE_LABEL = "FeH"
"""The [Fe/H] label every [X/Fe] is taken against."""
BASELINE_DEGREE = 3
"""Degree of the polynomial in [Fe/H] that stands for "what [Fe/H] alone tells"."""
MIN_ROWS = 30
"""Fewer rows than this give no skill (NaN): the baseline alone has four parameters."""
LOW_SKILL = 0.3
"""Below this the predicted [X/Fe] is mostly the trend: a warning at inference."""


def abundance_labels(labels: Sequence[str]) -> list[str]:
    """The [X/H] labels of ``labels`` other than [Fe/H] (those with an [X/Fe])."""
    return [label for label in labels if label in CA_LABELS]


def xfe_skill(
    pred_x: np.ndarray, true_x: np.ndarray, pred_fe: np.ndarray, true_fe: np.ndarray
) -> float:
    """Skill of the predicted [X/Fe] over a cubic in [Fe/H] (module docstring); NaN when
    fewer than :data:`MIN_ROWS` rows have all four values or the reference [X/Fe] is
    exactly a cubic in [Fe/H] (nothing beyond [Fe/H] to know)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (pred_x, true_x, pred_fe, true_fe)]
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    if ok.sum() < MIN_ROWS:
        return math.nan
    px, tx, pf, tf = (a[ok] for a in arrays)
    true_xfe, pred_xfe = tx - tf, px - pf
    # A lower degree where [Fe/H] has too few distinct values (a constant: the mean).
    degree = min(BASELINE_DEGREE, np.unique(tf).size - 1)
    if degree > 0:
        trend = np.polynomial.Polynomial.fit(tf, true_xfe, degree)(tf)
    else:
        trend = np.full_like(true_xfe, true_xfe.mean())
    baseline = float(np.mean((true_xfe - trend) ** 2))
    if not baseline > 1e-12 * max(float(np.mean(true_xfe**2)), 1e-300):
        return math.nan
    return 1.0 - float(np.mean((pred_xfe - true_xfe) ** 2)) / baseline


def skills(pred: np.ndarray, true: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """:func:`xfe_skill` of every abundance in ``labels`` (columns of ``pred``/``true``
    ``[N, L]``); empty when the labels have no [Fe/H] to take [X/Fe] against."""
    labels = list(labels)
    if FE_LABEL not in labels:
        return {}
    fe = labels.index(FE_LABEL)
    return {
        label: xfe_skill(pred[:, j], true[:, j], pred[:, fe], true[:, fe])
        for j, label in enumerate(labels)
        if label in CA_LABELS
    }


def low_skill(values: Mapping[str, float | None], threshold: float = LOW_SKILL) -> list[str]:
    """Labels whose skill is measured and below ``threshold``, in the order given."""
    return [k for k, v in values.items() if v is not None and math.isfinite(v) and v < threshold]


def two_decimals(value: float | None) -> str:
    """``0.13``, ``-0.25``; a value that rounds to zero is ``0.00``, never ``-0.00``."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def low_skill_words(values: Mapping[str, float | None], threshold: float = LOW_SKILL) -> str | None:
    """One sentence on the abundances with little [X/Fe] information (None if none)."""
    low = low_skill(values, threshold)
    if not low:
        return None
    names = ", ".join(f"{xfe_name(k)} {two_decimals(values[k])}" for k in low)
    return (
        f"little [X/Fe] information beyond [Fe/H] (skill < {threshold:g}; 1 = the star's "
        f"own [X/Fe], 0 = no better than [Fe/H] and a trend): {names}"
    )


def xfe_name(label: str) -> str:
    """``"[K/Fe]"`` for the label ``"KH"`` (``display_name`` gives ``"[K/H]"``)."""
    name = display_name(label)
    return name[:-2] + "Fe]" if name.endswith("/H]") else name


def catalogue_skill(provenance: Mapping[str, str]) -> dict[str, float | None]:
    """The [X/Fe] skills the checkpoints of a catalogue measured on their validation
    splits, from its provenance (``rrnet.checkpoints``); the first checkpoint that has a
    label wins; empty for catalogues without that record."""
    import json

    try:
        entries = json.loads(provenance.get("rrnet.checkpoints", "[]"))
    except ValueError:
        return {}
    found: dict[str, float | None] = {}
    for entry in entries if isinstance(entries, list) else []:
        skills_of = entry.get("xfe_skill") if isinstance(entry, dict) else None
        for label, value in (skills_of or {}).items():
            found.setdefault(label, value)
    return found
