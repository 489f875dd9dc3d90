"""`edgekit report`: a real store filled by real `edgekit profile` runs on two local targets,
rendered to HTML and loaded in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

import chromium
from conftest import FAST_PROFILE, run_cli
from edgekit.report import fmt

LOCAL2 = 'transport = "local"\nworkdir = "~/.edgekit-local2"\nruntimes = ["onnxruntime"]\nnotes = "a second local target"\n'


@pytest.fixture(scope="module")
def measured(tmp_path_factory, model_cache) -> Path:
    """A project whose store holds one real profile run on `local` and one on `local2`."""
    root = tmp_path_factory.mktemp("report")
    project = root / "project"
    for d in ("profiles", "targets"):
        (project / d).mkdir(parents=True)
    (root / "home").mkdir()
    (project / "profiles" / "fast.toml").write_text(FAST_PROFILE.replace("max_s = 5.0", "max_s = 5.0\nmax_runs = 300"))
    (project / "targets" / "local2.toml").write_text(LOCAL2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("EDGEKIT_CACHE", str(model_cache))
        mp.setenv("XDG_CONFIG_HOME", str(root / "config"))
        for target in ("local", "local2"):
            proc = run_cli("profile", "--target", target, "--profile", "fast", "--json", cwd=project)
            assert proc.returncode == 0, proc.stderr
    return project


class Cells(HTMLParser):
    """data-value of every cell of every variants table: {(target, recipe): {key: value}}."""

    def __init__(self) -> None:
        super().__init__()
        self.target: str | None = None
        self.recipe: str | None = None
        self.key: str | None = None
        self.values: dict[tuple[str, str], dict[str, object]] = {}
        self.texts: dict[tuple[str, str], dict[str, str]] = {}
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for cls in (a.get("class") or "").split():
            self.tags[f"{tag}.{cls}"] = self.tags.get(f"{tag}.{cls}", 0) + 1
        if tag == "svg" and a.get("data-plot"):
            self.tags[f"plot:{a['data-plot']}"] = self.tags.get(f"plot:{a['data-plot']}", 0) + 1
        if tag == "table" and "variants" in (a.get("class") or ""):
            self.target = a["data-target"]
        elif tag == "tr" and self.target and a.get("data-recipe"):
            self.recipe = a["data-recipe"]
        elif tag == "td" and self.recipe and a.get("data-key"):
            self.key = a["data-key"]
            raw = a.get("data-value") or ""
            self.values.setdefault((self.target, self.recipe), {})[self.key] = json.loads(raw) if raw else None

    def handle_data(self, data):
        if self.key:
            self.texts.setdefault((self.target, self.recipe), {})[self.key] = data

    def handle_endtag(self, tag):
        if tag == "td":
            self.key = None
        elif tag == "table":
            self.target = self.recipe = None


@pytest.mark.slow  # two real profile runs and three Chromium starts
def test_report_html_renders_offline_in_chromium(measured, tmp_path_factory):
    if not chromium.available():
        pytest.fail("chromium is missing: ./scripts/test installs it (apt-get install -y chromium)")
    out = tmp_path_factory.mktemp("html")
    page = out / "report.html"
    proc = run_cli("report", "-o", str(page), cwd=measured)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote" in proc.stdout and page.is_file()
    source = page.read_text()
    # Self-contained: nothing to fetch, no script, everything inline.
    assert not re.search(r'(src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)', source)

    dom, console = chromium.dump_dom(page)
    assert console == [], console
    cells = Cells()
    cells.feed(dom)
    for kind in ("pareto", "energy", "latency", "cross-target"):
        assert cells.tags.get(f"plot:{kind}", 0) >= 1, kind
    assert cells.tags.get("plot:pareto") == 2 and cells.tags.get("plot:latency") == 2
    assert cells.tags.get("circle.point") == 4  # two variants on each of two targets
    assert cells.tags.get("rect.box") == 4 and cells.tags.get("polyline.front", 0) + cells.tags.get("circle.front-mark", 0) >= 2
    assert cells.tags.get("rect.bar") == 2  # cross-target: the chosen variant of each target
    # No power sensor on this VM: energy says so instead of inventing a figure.
    assert "unavailable: " in dom or "not measured" in dom  # the agent's reason when it gave one

    # The numbers in the table are the store's.
    db = sqlite3.connect(measured / ".edgekit" / "results.db")
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT m.target, v.recipe, m.p50_ms, m.p90_ms, m.p99_ms, m.peak_rss_mb, m.document, "
                      "v.document AS vdoc FROM measurements m JOIN variants v ON v.id = m.variant_id").fetchall()
    assert len(rows) == 4
    for r in rows:
        shown, text = cells.values[(r["target"], r["recipe"])], cells.texts[(r["target"], r["recipe"])]
        doc, vdoc = json.loads(r["document"]), json.loads(r["vdoc"])
        for key in ("p50_ms", "p90_ms", "p99_ms"):
            assert shown[key] == r[key] and text[key] == fmt.ms(r[key])
        assert shown["peak_rss_mb"] == r["peak_rss_mb"] and text["peak_rss_mb"] == fmt.mb(r["peak_rss_mb"])
        assert shown["ci95_median_ms"] == doc["latency"]["ci95_median_ms"]
        assert shown["n"] == len(doc["samples_ms"])
        assert shown["accuracy"] == vdoc["metrics"]["accuracy"] and text["accuracy"] == fmt.pct(vdoc["metrics"]["accuracy"])
        assert shown["size_bytes"] == vdoc["size_bytes"]
        assert shown["energy_mj"] is None and text["energy_mj"] == "-"

    png = out / "report.png"
    assert chromium.screenshot(page, png) == []
    from PIL import Image, ImageStat

    image = Image.open(png).convert("L")
    assert image.size == (1400, 2000)
    assert ImageStat.Stat(image).stddev[0] > 10, "the screenshot is blank"
    # The plot area of the first target (below the overview) is drawn, not empty background.
    assert len(set(image.crop((0, 600, 700, 1400)).getdata())) > 20
    keep = os.environ.get("EDGEKIT_KEEP_SCREENSHOT")  # pytest rotates its tmp dirs; keep a copy on request
    if keep:
        shutil.copy(png, keep)
    print(f"\nscreenshot: {keep or png}")


def test_report_errors_are_one_line(measured, tmp_path):
    proc = run_cli("report", "--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "r.html"), cwd=measured)
    assert proc.returncode == 2 and "no results store" in proc.stderr and "Fix:" in proc.stderr
    assert not (tmp_path / "none.db").exists()
    proc = run_cli("report", "--target", "nowhere", "-o", str(tmp_path / "r.html"), cwd=measured)
    assert proc.returncode == 2 and "no measurements on nowhere" in proc.stderr
    proc = run_cli("report", "--run", "999", "-o", str(tmp_path / "r.html"), cwd=measured)
    assert proc.returncode == 2 and "--run 999" in proc.stderr
    assert not (tmp_path / "r.html").exists()
