"""The HTML report in a real headless Chromium (Debian's ``chromium``): images decode, tables render.

The report itself has no JavaScript. The test loads a copy with a tiny probe script
appended that, on ``load``, writes what the browser sees (decoded images and their
natural widths, tables, rows, SVGs) into the DOM, which ``--dump-dom`` then prints.
Skipped when no chromium is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_review import make_session

from ptolemy_core.review.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)

PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var d = document.createElement("div");
  d.id = "probe";
  d.setAttribute("data-images", imgs.length);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  d.setAttribute("data-decoded", ok.length);
  d.setAttribute("data-widths", imgs.map(function (i) { return i.naturalWidth; }).join(","));
  d.setAttribute("data-tables", document.querySelectorAll("table").length);
  d.setAttribute("data-rows", document.querySelectorAll("table tbody tr").length);
  d.setAttribute("data-svgs", document.querySelectorAll("svg rect").length);
  document.body.appendChild(d);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path):
    make_session(tmp_path / "s")
    page = write_report(tmp_path / "s", tmp_path / "report.html", run_finders=False)
    html = page.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))

    proc = _chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<div id="probe"([^>]*)>', proc.stdout)
    assert m, "the page did not load (no probe output)"
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', m.group(1)))
    assert attrs["images"] == "4" and attrs["decoded"] == "4"  # the 4 readable images, all decoded
    widths = [int(w) for w in attrs["widths"].split(",")]
    assert all(w > 256 for w in widths)  # picture + legend panel
    assert attrs["tables"] == "5"  # summary + 4 target tables
    assert int(attrs["rows"]) == 5 + 2 * (4 + 6)  # summary rows + squares + holes
    assert int(attrs["svgs"]) > 20  # histogram bars are drawn

    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, "--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}",
                     page.as_uri())
    assert proc.returncode == 0 and shot.stat().st_size > 20_000
