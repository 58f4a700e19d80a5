"""Carried columns are carried, unchanged: an input column named like an output column is
kept as ``input_<name>`` (said once), and a text obsid or sexagesimal ra keeps its values."""

from __future__ import annotations

import logging

import polars as pl
import pytest

from helpers import REAL_FILE, build_world, input_catalogue, needs_shared
from rrnet.inference import run_inference
from rrnet.inference.streaming import carried_columns, carried_name

pytestmark = needs_shared


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_world(tmp_path_factory.mktemp("carried"))


def _catalog() -> pl.DataFrame:
    table = input_catalogue()
    n = table.height
    return table.with_columns(
        pl.Series("flag", [f"user-{i}" for i in range(n)]),
        pl.Series("ood_score", [float(i) / 10 for i in range(n)]),
        pl.Series("Teff[K]", [4000 + i for i in range(n)]),
        pl.Series("obsid", [f"LAMOST-{i}" if i % 2 else str(100 + i) for i in range(n)]),
        pl.Series("ra", ["12:34:56.7"] * n),
        pl.Series("dec", [float(i) for i in range(n)]),
    )


def test_clashing_and_unconvertible_columns_are_carried_unchanged(world, tmp_path, caplog):
    catalog = _catalog()
    out = tmp_path / "cat.parquet"
    with caplog.at_level(logging.WARNING):
        run_inference(
            models=[world["sp"]], catalog=catalog, data_dir=REAL_FILE.parent, out=out,
            device="cpu", chunk_rows=4, workers=0,
        )  # fmt: skip
    result = pl.read_parquet(out)
    assert result.height == catalog.height
    for name in ("flag", "ood_score", "Teff[K]", "obsid", "ra"):
        assert result[f"input_{name}"].to_list() == catalog[name].to_list(), name
    assert result["dec"].to_list() == catalog["dec"].to_list()  # taken over unchanged
    assert "input_dec" not in result.columns
    assert result["flag"].dtype != pl.Utf8  # the catalogue's own flag
    renamed = [r for r in caplog.records if "carried as" in r.getMessage()]
    assert len(renamed) == 1  # said once, not once per chunk


def test_carried_name_rule():
    schema_in = {"flag": pl.Utf8, "obsid": pl.Int64, "ra": pl.Utf8, "mag": pl.Float64}
    carried = carried_columns(schema_in)
    assert carried == ["flag", "ra", "mag"]
    assert [carried_name(c) for c in carried] == ["input_flag", "input_ra", "mag"]
