"""Both pages in a real browser: headless Chromium loads them with no error and shows
every figure (each image decoded to a non-zero width). Skipped, with the reason
shown by ``-ra``, where Chromium is not installed (Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import ISOCHRONES, OUTSIDE_TOOLS, needs_shared
from rrnet.cli.eval import main
from rrnet.evaluation.toy import toy_tables
from rrnet.io import write_table

BROWSER = next((b for b in OUTSIDE_TOOLS["chromium"] if shutil.which(b)), None)
pytestmark = [
    needs_shared,
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (apt-get install chromium)"),
]

# Runs before the page: records script errors, failed resources and console.error calls,
# then after load writes what it saw into <pre id="probe"> for --dump-dom to return.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(
  e.message || ("failed to load " + (e.target && (e.target.src || e.target.href)))), true);
const __ce = console.error;
console.error = (...a) => { window.__errors.push(a.join(" ")); __ce(...a); };
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({file: i.dataset.file, w: i.naturalWidth}));
  const pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify({errors: window.__errors, images: imgs});
  document.body.appendChild(pre);
});
</script>"""


def probe(page: Path) -> dict:
    """Load a copy of ``page`` with :data:`PROBE` in its head; return what the probe saw."""
    copy = page.with_name("probe-" + page.name)
    copy.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not finish loading: {dom[:300]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser")
    catalog, labels = toy_tables(60, seed=2)
    bits = np.where(catalog["snr_blue"].to_numpy() < 10, 2, 0).astype(np.int32)
    catalog = catalog.with_columns(pl.Series("quality_bits", bits))
    write_table(catalog, root / "cat.parquet")
    write_table(labels, root / "labels.csv")
    iso = ["--isochrones", str(ISOCHRONES)]
    args = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.csv")]
    assert main([*args, "--out", str(root / "report"), *iso]) == 0
    assert main(["overview", str(root / "cat.parquet"), "--out", str(root / "overview"), *iso]) == 0
    return {"report": root / "report" / "index.html", "overview": root / "overview" / "index.html"}


@pytest.mark.parametrize(
    ("name", "figures"),
    [
        ("report", {"residuals.png", "kiel.png", "sigma_vs_snr.png", "coverage.png"}),
        ("overview", {"kiel.png", "sigma_vs_snr.png", "distributions.png", "xfe_giants.png"}),
    ],
)
def test_page_loads_without_error_and_shows_its_figures(pages, name, figures) -> None:
    seen = probe(pages[name])
    assert seen["errors"] == []
    widths = {Path(i["file"]).name: i["w"] for i in seen["images"]}
    assert figures <= set(widths), widths
    assert all(w > 300 for w in widths.values()), widths  # every image decoded
