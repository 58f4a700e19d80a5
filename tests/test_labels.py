"""Label names and the restricted reader of the authors' label_config.pkl."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import LABEL_CONFIG, needs_shared
from rrnet.labels import (
    ALL_LABELS,
    CA_LABELS,
    GROUPS,
    SP_LABELS,
    UNITS,
    UnsafePickleError,
    label_indices,
    read_label_config,
)


def test_groups_partition_the_catalogue_labels() -> None:
    assert len(SP_LABELS) == 3 and len(CA_LABELS) == 14
    assert sorted(SP_LABELS + CA_LABELS) == sorted(ALL_LABELS)
    assert GROUPS == {"SP": SP_LABELS, "CA": CA_LABELS}
    assert set(UNITS) == set(ALL_LABELS)
    assert UNITS["Teff[K]"] == "K"


@needs_shared
def test_reads_the_published_label_config_like_pickle() -> None:
    # The shared file is trusted: a plain pickle.load is the oracle here.
    with open(LABEL_CONFIG, "rb") as fh:
        reference = pickle.load(fh)
    config = read_label_config(LABEL_CONFIG)
    assert config["label_list"] == list(reference["label_list"])
    for key in ("label_mean", "label_std", "flux_mean", "flux_std"):
        np.testing.assert_array_equal(config[key], reference[key])
    assert config["flux_mean"].shape == (7200,)
    assert label_indices(config["label_list"], ALL_LABELS)  # every catalogue label present


def test_label_indices_names_missing_labels() -> None:
    assert label_indices(["a", "b", "c"], ["c", "a"]) == [2, 0]
    with pytest.raises(KeyError, match="zz"):
        label_indices(["a"], ["a", "zz"])


class _SystemCall:
    def __reduce__(self):
        return (os.system, ("touch rrnet-pwned-marker",))


class _Eval:
    def __reduce__(self):
        return (eval, ("open('rrnet-pwned-marker', 'w')",))


@pytest.mark.parametrize("payload", [_SystemCall(), _Eval()])
def test_malicious_pickle_is_refused_and_never_executed(payload, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = {"label_list": ["Teff[K]"], "label_mean": np.zeros(1), "label_std": payload}
    path = tmp_path / "label_config.pkl"
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        read_label_config(path)
    assert not (tmp_path / "rrnet-pwned-marker").exists()


def test_structurally_wrong_configs_are_errors(tmp_path) -> None:
    path = tmp_path / "c.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a dict"):
        read_label_config(path)
    path.write_bytes(pickle.dumps({"label_list": ["a"], "label_mean": np.zeros(1)}))
    with pytest.raises(ValueError, match="flux_mean"):
        read_label_config(path)
    bad = {
        "label_list": ["a", "b"],
        "label_mean": np.zeros(3),
        "label_std": np.ones(2),
        "flux_mean": np.zeros(4, np.float32),
        "flux_std": np.ones(4, np.float32),
    }
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="label_mean"):
        read_label_config(path)


@settings(max_examples=60, deadline=None)
@given(head=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\x80\x04", b"PK\x03\x04", b"\x80\x02}q"]),
       tail=st.binary(max_size=64))  # fmt: skip
def test_a_file_that_is_no_pickle_is_one_value_error_naming_it(head, tail) -> None:
    """A PNG, an empty or a truncated file given as --label-config: an unpickler's own
    error (EOFError, persistent id, KeyError, ...) became "unexpected EOFError"; it is now
    a ValueError naming the file (or the unsafe-pickle refusal, or a structural error)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "label_config.pkl"
        path.write_bytes(head + tail)
        with pytest.raises((ValueError, UnsafePickleError)) as err:
            read_label_config(path)
        assert str(path) in str(err.value) or isinstance(err.value, UnsafePickleError)
