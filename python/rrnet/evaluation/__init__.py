"""Evaluation of a predicted catalogue against reference labels (``rrnet-eval``).

Modules: ``sample`` (join and row selection), ``metrics`` (MAE, bias, scatter,
z-scores per S/N bin), ``calibration`` (coverage and validation-only recalibration),
``repeats`` (predicted sigma vs scatter of repeat observations), ``report``
(JSON, Markdown, index.html), ``figures`` (which figures a report shows),
``compare`` (the architecture comparison) and ``evaluate`` (the whole evaluation).
"""

from rrnet.evaluation.calibration import (
    apply_recalibration,
    fit_recalibration,
    read_recalibration,
    write_recalibration,
)
from rrnet.evaluation.metrics import SNR_BINS, LabelMetrics, label_metrics, metrics_table
from rrnet.evaluation.repeats import per_star, repeat_table
from rrnet.evaluation.sample import SampleError, build_sample

__all__ = [
    "SNR_BINS",
    "LabelMetrics",
    "SampleError",
    "apply_recalibration",
    "build_sample",
    "fit_recalibration",
    "label_metrics",
    "metrics_table",
    "per_star",
    "read_recalibration",
    "repeat_table",
    "write_recalibration",
]
