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


def probe(page: Path, script: str = PROBE, tag: str = "probe", *options: str) -> dict:
    """Load a copy of ``page`` with ``script`` in its head (Chromium ``options`` added);
    return the JSON the script left in ``<pre id=tag>``."""
    copy = page.with_name(f"{tag}-{page.name}")
    copy.write_text(page.read_text().replace("<head>", "<head>" + script, 1))
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           *options, "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout
    found = re.search(rf'<pre id="{tag}">(.*?)</pre>', dom, re.S)
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


# After load at 700 px: opens every folded table, then reports table-of-contents entries
# that overlap one another and tables that reach beyond the window (not scrollable).
LAYOUT = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => d.open = true);
  const entries = [...document.querySelectorAll("nav li")];
  const items = entries.map(li => li.getBoundingClientRect());
  let overlaps = entries.filter(li => li.scrollWidth > li.clientWidth + 1  // runs over
                                      || li.getClientRects().length > 1).length;  // split
  // a number ("15.") stands in the room left of its entry: the column before must end there
  const ol = document.querySelector("nav ol");
  const marker = ol ? parseFloat(getComputedStyle(ol).paddingLeft) : 0;
  items.forEach(a => items.forEach(b => {
    if (b.left > a.left + 1 && b.left - marker < a.right - 1) overlaps++;
  }));
  const width = document.documentElement.clientWidth;
  const scrolls = e => e && (["auto", "scroll"].includes(getComputedStyle(e).overflowX)
                              || scrolls(e.parentElement));
  const beyond = [...document.querySelectorAll("table")].filter(
    t => t.getBoundingClientRect().right > width + 1 && !scrolls(t.parentElement)).length;
  const pre = document.createElement("pre"); pre.id = "layout";
  pre.textContent = JSON.stringify({overlaps, beyond, page: document.documentElement.scrollWidth,
                                    width, tables: document.querySelectorAll("table").length});
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.parametrize("name", ["report", "overview"])
def test_a_narrow_window_neither_overlaps_nor_overflows(pages, name) -> None:
    """At 700 px the table-of-contents columns overlapped and the 12-column metrics table
    ran off the page with no scroll bar; wide tables now scroll inside their own box."""
    seen = probe(pages[name], LAYOUT, "layout", "--window-size=700,900")
    assert seen["tables"] > 0
    assert seen["overlaps"] == 0 and seen["beyond"] == 0, seen
    assert seen["page"] <= seen["width"], seen  # no sideways scrolling of the whole page
