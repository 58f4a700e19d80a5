"""Provenance: what produced a catalogue, stored in every output format.

A catalogue number is only citable with the code version, the preprocessing
settings and the exact model weights behind it, so each catalogue carries them
(Parquet key-value metadata, FITS header keywords, VOTable INFO elements, the
ECSV header, a JSON sidecar for CSV). ``rrnet.created`` is UTC without an offset,
the form FITS ``DATE`` requires.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import rrnet
from rrnet.utils.revision import source_commit

log = logging.getLogger(__name__)


class FingerprintMismatch(ValueError):
    """A checkpoint was trained on spectra preprocessed with other settings."""


def fingerprint_hash(fingerprint: dict[str, Any] | None) -> str | None:
    """The ``hash`` of a preprocessing fingerprint dict (None for None)."""
    if fingerprint is None:
        return None
    return str(fingerprint.get("hash"))


def fingerprint_diff(checkpoint_fp: dict[str, Any], data_fp: dict[str, Any]) -> list[str]:
    """The settings that differ, e.g. ``"correct_rv: checkpoint True, input False"``.

    Identical descriptions with different hashes differ in the grid values themselves.
    """
    keys = sorted((set(checkpoint_fp) | set(data_fp)) - {"hash"})
    missing = "(not recorded)"
    out = [
        f"{k}: checkpoint {checkpoint_fp.get(k, missing)}, input {data_fp.get(k, missing)}"
        for k in keys
        if checkpoint_fp.get(k, missing) != data_fp.get(k, missing)
    ]
    if not out and checkpoint_fp.get("hash") != data_fp.get("hash"):
        out.append("the wavelength grid values (same description, different hash)")
    return out


def check_fingerprint(
    checkpoint: str,
    checkpoint_fp: dict[str, Any] | None,
    data_fp: dict[str, Any],
    *,
    allow_mismatch: bool = False,
) -> None:
    """Refuse a checkpoint whose preprocessing fingerprint differs from the data's.

    A checkpoint without a fingerprint (an imported authors' release) is accepted
    with a logged warning: its preprocessing is the published one, assumed to be
    this package's defaults. ``allow_mismatch`` turns the refusal into a warning.
    """
    if checkpoint_fp is None:
        log.warning(
            "checkpoint %s records no preprocessing fingerprint (imported release?); "
            "assuming it matches %s",
            checkpoint,
            fingerprint_hash(data_fp),
        )
        return
    mine, theirs = fingerprint_hash(data_fp), fingerprint_hash(checkpoint_fp)
    if mine == theirs:
        return
    differs = fingerprint_diff(checkpoint_fp, data_fp)
    what = "; ".join(differs) if differs else "unknown settings"
    message = (
        f"checkpoint {checkpoint} was trained on spectra preprocessed with settings "
        f"{theirs}, the input with {mine}; they differ in {what}. Re-preprocess with the "
        "checkpoint's settings (or pass --allow-fingerprint-mismatch)"
    )
    if not allow_mismatch:
        raise FingerprintMismatch(message)
    log.warning("%s; continuing because the mismatch is allowed", message)


def build_provenance(
    *,
    input_name: str,
    input_kind: str,
    preprocessing: dict[str, Any],
    checkpoints: list[dict[str, Any]],
    label_sources: dict[str, int],
    thresholds: dict[str, Any],
    quality_bits: dict[str, int],
    created: datetime | None = None,
    environment: dict[str, Any] | None = None,
    reading: dict[str, Any] | None = None,
) -> dict[str, str]:
    """String key-value provenance (keys prefixed ``rrnet.``), JSON for structured values.

    ``checkpoints`` holds one dict per checkpoint (``path``, ``hash``, ``labels``);
    ``label_sources`` maps each catalogue label to the index of the checkpoint
    that provides it. ``reading`` (a catalogue preprocessed on the fly): where the
    files were read and which RVs were used, which change the values.
    """
    created = created or datetime.now(UTC)
    commit = source_commit()
    return {
        "rrnet.version": rrnet.__version__,
        **({"rrnet.commit": commit} if commit else {}),
        "rrnet.created": created.astimezone(UTC).replace(tzinfo=None).isoformat("T", "seconds"),
        "rrnet.input": input_name,
        "rrnet.input_kind": input_kind,
        "rrnet.preprocessing_hash": str(fingerprint_hash(preprocessing)),
        "rrnet.preprocessing": json.dumps(preprocessing, sort_keys=True),
        "rrnet.checkpoint_hashes": ",".join(str(c["hash"]) for c in checkpoints),
        "rrnet.checkpoints": json.dumps(checkpoints, sort_keys=True),
        "rrnet.label_sources": json.dumps(label_sources),
        "rrnet.quality_thresholds": json.dumps(thresholds, sort_keys=True),
        "rrnet.quality_bits": json.dumps(quality_bits),
        "rrnet.environment": json.dumps(environment or {}, sort_keys=True),
    } | ({"rrnet.reading": json.dumps(reading, sort_keys=True)} if reading else {})


FITS_KEYWORDS: dict[str, str] = {
    "rrnet.version": "RRNETVER",
    "rrnet.commit": "RRNETCOM",
    "rrnet.created": "DATE",
    "rrnet.input": "INPUT",
    "rrnet.input_kind": "INKIND",
    "rrnet.preprocessing_hash": "PPHASH",
    "rrnet.preprocessing": "PPJSON",
    "rrnet.checkpoint_hashes": "CKHASHES",
    "rrnet.checkpoints": "CKPTJSON",
    "rrnet.label_sources": "LABSRC",
    "rrnet.quality_thresholds": "QTHRESH",
    "rrnet.quality_bits": "QBITS",
    "rrnet.per_star": "PERSTAR",
    "rrnet.environment": "ENVIRON",
    "rrnet.reading": "READING",
}
"""Provenance key -> FITS header keyword (long values use the CONTINUE convention)."""

FITS_COMMENTS: dict[str, str] = {
    "RRNETVER": "rrnet version that wrote this catalogue",
    "RRNETCOM": "rrnet git commit (an editable install from its repository)",
    "DATE": "UTC creation time",
    "INPUT": "input store or catalogue",
    "INKIND": "store or catalog (preprocessed on the fly)",
    "PPHASH": "preprocessing settings fingerprint hash",
    "PPJSON": "preprocessing settings (JSON)",
    "CKHASHES": "checkpoint hashes, in --model order",
    "CKPTJSON": "checkpoints: path, hash, labels (JSON)",
    "LABSRC": "label -> index of the checkpoint providing it",
    "QTHRESH": "quality_bits thresholds (JSON)",
    "QBITS": "quality_bits names and values (JSON)",
    "PERSTAR": "per-star table: star column, error floor (JSON)",
    "ENVIRON": "versions, device, threads, precision (JSON)",
    "READING": "--catalog: data folder, RV mode and column (JSON)",
}
