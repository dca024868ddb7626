"""The plots page a user opens: `dvc plots show` on the committed study draws the curated
list of dvc.yaml's `plots:` and the charts and figures the stages' `plots:` outputs declare
(one file per stage that keeps DVC's run-cache: each training stage's history drawn as its
loss chart, extract_features' images/s, split's data figures; see dvc.yaml's header), and
nothing else; it warns about nothing, and its charts are drawn by a
browser with no network (the Vega libraries are inside the page).

The browser test drives Debian's Chromium (`apt-get install chromium chromium-driver`, as
.ci/run does) with Selenium, and is skipped where either is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, dvc, headless_chromium

from stages.lib.study import MODEL_NAMES

DVC_FILE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
LOAD_SECONDS = 60


def curated() -> tuple[list[str], list[str]]:
    """(chart ids, figure paths) that dvc.yaml's top-level `plots:` declares, in order."""
    from dvc_render import ImageRenderer

    ids = [entry if isinstance(entry, str) else next(iter(entry)) for entry in DVC_FILE["plots"]]
    figures = [i for i in ids if Path(i).suffix in ImageRenderer.EXTENSIONS]
    return [i for i in ids if i not in figures], figures


def stage_plots() -> tuple[list[str], list[str]]:
    """(chart ids, figure paths) that DVC draws from the stages' own `plots:` outputs: every
    file in them (split's is a folder of figures) in the committed study."""
    from dvc_render import ImageRenderer, VegaRenderer

    declared = [ROOT / out for stage in DVC_FILE["stages"].values()
                for entry in stage.get("plots", []) for out in ([entry] if isinstance(entry, str) else entry)]
    files = sorted(path.relative_to(ROOT).as_posix() for out in declared
                   for path in ([out] if out.is_file() else out.rglob("*")) if path.is_file())
    figures = [f for f in files if Path(f).suffix in ImageRenderer.EXTENSIONS]
    return [VegaRenderer.remove_special_chars(f) for f in files if f not in figures], figures


def body(html: str) -> str:
    """The page's plots (the template's head inlines the Vega libraries, whose code holds
    strings like the ones counted here)."""
    return html.split("<body>", 1)[1]


def show(cwd: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return dvc(cwd, "plots", "show", "-o", str(out), *args)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """`dvc plots show` of this checkout's committed files, as a user runs it."""
    out = tmp_path_factory.mktemp("dvc_plots")
    result = show(ROOT, out)
    assert result.stderr.strip() == "", result.stderr  # DVC's "failed to load some plots" goes here
    assert result.stdout.strip() == (out / "index.html").as_uri(), result.stdout
    return out / "index.html"


def test_page_template_inlines_what_dvc_loads():
    """.dvc/plots/page.html holds the vega, vega-lite and vega-embed versions that DVC's own
    page loads, and no script from elsewhere (stages/tools/plots_page.py, `--check`)."""
    result = subprocess.run([sys.executable, "-m", "stages.tools.plots_page", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # .dvc/config names it, so that plain `dvc plots show` uses it
    assert dvc(ROOT, "config", "plots.html_template").stdout.strip() == "plots/page.html"


@pytest.mark.slow
@pytest.mark.network  # the npm registry
def test_page_template_is_what_npm_gives(tmp_path):
    """Rewriting the template from the npm registry gives the committed file, byte for byte
    (skipped without npm or the registry)."""
    if not shutil.which("npm"):
        pytest.skip("npm is not installed")
    if subprocess.run(["npm", "ping"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("the npm registry is not reachable from here")
    out = tmp_path / "page.html"
    result = subprocess.run([sys.executable, "-m", "stages.tools.plots_page", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (ROOT / ".dvc/plots/page.html").read_bytes()


def test_only_the_long_stages_keep_plots_outputs():
    """A stage's `plots:` output is drawn file by file; an uncached `outs:` entry costs the
    stage DVC's run-cache. The training stages and extract_features keep theirs as `plots:`
    (they take long: the run-cache brings them back), and so do split's data figures;
    evaluate's folder and report, and split's record, are `outs:`."""
    plotted = {name: [next(iter(e)) if isinstance(e, dict) else e for e in stage["plots"]]
               for name, stage in DVC_FILE["stages"].items() if "plots" in stage}
    assert plotted == {"split": ["plots/data"], "extract_features": ["plots/extract_features/record.json"],
                       **{m: [f"plots/{m}/history.json"] for m in MODEL_NAMES}}
    evaluate_outs = [next(iter(e)) if isinstance(e, dict) else e for e in DVC_FILE["stages"]["evaluate"]["outs"]]
    assert {"plots/evaluate", "plots/report.md"} <= set(evaluate_outs)


def test_plots_show_draws_the_curated_list(page):
    from dvc_render import VegaRenderer

    charts, figures = curated()
    assert (len(charts), len(figures)) == (13, 10)
    stage_charts, data_figures = stage_plots()
    # each training stage's loss chart (its history.json), extract_features' images/s
    assert len(stage_charts) == 5 + 1 and len(data_figures) == 3
    html = body(page.read_text(encoding="utf-8"))
    drawn = re.findall(r"vegaEmbed\('#([^']+)'", html)
    assert sorted(drawn) == sorted([VegaRenderer.remove_special_chars(c) for c in charts] + stage_charts)
    # the charts a stage output declares are the ones dvc.yaml titles: nothing generic
    declared = {name: stage for name, stage in DVC_FILE["stages"].items() if "plots" in stage}
    for name in [*MODEL_NAMES, "extract_features"]:
        (out, props), = declared[name]["plots"][0].items()
        assert {"template", "title", "x", "y"} <= set(props), (name, props)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == len(figures) + len(data_figures)
    assert all((page.parent / src).is_file() for src in images), images
    named = sorted(re.findall(r"<p>(plots/[^<]+)</p>", html))
    assert named == sorted(figures + data_figures)


def test_page_has_no_script_from_a_network(page):
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc=", html), "the page loads a script: it will not draw offline"
    assert not re.search(r"<link[^>]*\shref=\"?https?:", html)


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory):
    """Headless Chromium with its network off: Chrome DevTools' offline emulation, and a
    proxy to a closed local port besides, so that no request leaves the machine."""
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile"), "1400,1000") as driver:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver


# Per Vega chart on the page: its drawing surface (vega-embed renders to a canvas, or an SVG
# with the svg renderer), its size, and for a canvas how many pixels are painted.
CHARTS_JS = """
return [...document.querySelectorAll('.vega-embed .marks')].map(e => {
  let painted = -1;
  if (e.tagName === 'CANVAS' && e.width === 0) {
    painted = 0;  // a chart with nothing to draw
  } else if (e.tagName === 'CANVAS') {
    const d = e.getContext('2d').getImageData(0, 0, e.width, e.height).data;
    painted = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
  } else {
    painted = e.querySelectorAll('path, line, rect, text').length;
  }
  return {tag: e.tagName, width: e.clientWidth, height: e.clientHeight, painted: painted,
          id: e.closest('.vega-embed').parentElement.id};
});
"""


def test_page_draws_its_charts_with_no_network(page, offline_browser, tmp_path):
    curated_charts, figures = curated()
    charts, figures = curated_charts + stage_plots()[0], figures + stage_plots()[1]
    driver = offline_browser
    driver.get(page.as_uri())
    deadline = time.monotonic() + LOAD_SECONDS
    while True:
        drawn = driver.execute_script(CHARTS_JS)
        if len(drawn) >= len(charts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    driver.save_screenshot(str(tmp_path / "plots_page.png"))
    assert len(drawn) == len(charts), f"{len(drawn)} of {len(charts)} charts drawn"
    # every chart is one dvc.yaml declares (test above), and each is drawn, not blank
    assert all(c["tag"] in ("CANVAS", "svg") and c["width"] > 100 and c["height"] > 100 for c in drawn), drawn
    assert all(c["painted"] > 500 for c in drawn if c["tag"] == "CANVAS"), drawn
    loaded = driver.execute_script("return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded == len(figures)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_dvcs_own_page_draws_nothing_in_that_browser(tmp_path, offline_browser):
    """The control: DVC's default page (Vega from a CDN) stays blank in the same browser,
    so the test above ran with the network really off."""
    from dvc_render.html import PAGE_HTML

    template = tmp_path / "cdn.html"
    template.write_text(PAGE_HTML, encoding="utf-8")
    show(ROOT, tmp_path / "cdn", "--html-template", str(template))
    driver = offline_browser
    driver.get((tmp_path / "cdn" / "index.html").as_uri())
    assert "cdn.jsdelivr.net/npm/vega@" in driver.page_source
    assert driver.execute_script("return document.readyState") == "complete"
    assert driver.execute_script("return typeof vegaEmbed") == "undefined"
    assert driver.execute_script(CHARTS_JS) == []
