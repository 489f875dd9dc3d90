"""Machine formats, comparisons and the CI gate over a store captured from real profile runs
(tests/fixtures/report_store.json, see tests/report_store.py for how it was made).

Golden files live in tests/golden/; after an intended change regenerate them with
EDGEKIT_UPDATE_GOLDEN=1 pytest tests/test_report_formats.py and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import run_cli
from edgekit.agent.stats import summarize
from edgekit.report import formats
from edgekit.report.compare import columns, compare, mann_whitney_u
from edgekit.report.data import gather, open_store
from edgekit.results import ResultsStore
from edgekit.records import Measurement
from report_store import captured

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def db(tmp_path) -> Path:
    return captured(tmp_path / "results.db")


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("EDGEKIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"missing golden {path}: run with EDGEKIT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


def test_report_formats_match_golden(db):
    with open_store(db) as store:
        report = gather(store)
        assert [(t.target, t.run_id) for t in report.targets] == [("local", 3), ("local2", 2)]
        golden("report.json", formats.to_json(report))
        golden("report.csv", formats.to_csv(report))
        golden("report.md", formats.to_markdown(report))
        # Same store, same output: nothing depends on when or where it was made.
        assert formats.to_json(gather(store)) == formats.to_json(report)
    doc = json.loads((GOLDEN / "report.json").read_text())
    fp32 = doc["targets"][0]["variants"][0]
    assert fp32["recipe"] == "onnx:fp32" and fp32["energy_mj"] is None and fp32["power_note"] == "not measured"


def test_compare_formats_match_golden(db):
    with open_store(db) as store:
        targets = compare(*reversed(columns(store, targets=("local", "local2"))))
        runs = compare(*reversed(columns(store, runs=(1, 3))))
    golden("compare-targets.json", formats.comparison_json(targets))
    golden("compare-targets.csv", formats.comparison_csv(targets))
    golden("compare-targets.md", formats.comparison_markdown(targets))
    golden("compare-runs.md", formats.comparison_markdown(runs))
    # The CLI prints the same documents.
    proc = run_cli("compare", "--db", str(db), "--target", "local", "--target", "local2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "compare-targets.json").read_text()
    proc = run_cli("report", "--db", str(db), "--csv")
    assert proc.returncode == 0 and proc.stdout == (GOLDEN / "report.csv").read_text(), proc.stderr


def test_terminal_tables_are_plain_when_piped(db):
    proc = run_cli("report", "--db", str(db), "--table")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout and "onnx:int8-static" in proc.stdout and "★" in proc.stdout
    proc = run_cli("compare", "--db", str(db), "--run", "1", "--run", "3")
    assert proc.returncode == 0 and "\x1b[" not in proc.stdout and "No significant regression." in proc.stdout


def test_mann_whitney_matches_scipy_on_real_samples(db):
    scipy_stats = pytest.importorskip("scipy.stats")  # installed with scikit-learn
    with open_store(db) as store:
        rep = gather(store, runs=(1, 2))
    a, b = rep.targets[0].rows[0].samples, rep.targets[1].rows[0].samples
    for x, y in ((a, b), (b, a), (a, a[::2]), (a[:30], [v * 1.2 for v in a[:25]])):
        u, p = mann_whitney_u(x, y)
        ref = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
        assert u == pytest.approx(ref.statistic, abs=1e-9) and p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def _add_run(store: ResultsStore, model: str, target: str, template: Measurement, samples: list[float],
             note: str) -> int:
    """A run whose measurement is `template` with other samples and the agent's own statistics of them."""
    run_id = store.start_run(f"test: {note}", model, "fast")
    probe = next(store.rows("SELECT document FROM probes WHERE target=? ORDER BY run_id LIMIT 1", target))
    store.save_probe(run_id, target, json.loads(probe["document"]))
    store.save_profile(run_id, {"name": "fast", "select": {"objective": "p90_ms",
                                                           "constraints": {"max_accuracy_drop": 0.01}}})
    doc = {**template.document, "samples_ms": samples, "latency": summarize(samples), "note": note}
    m = Measurement(target=target, variant_id=template.variant_id, sha256=template.sha256, status="ok",
                    stats=doc["latency"], memory=template.memory, cold=template.cold,
                    settings_key=template.settings_key, document=doc)
    store.link_variant(run_id, target, template.variant_id, store.save_measurement(run_id, m))
    return run_id


def test_significance_same_distribution_vs_20_percent_slower(db):
    """Built from one real measurement (run 3, local, onnx:int8-static, 295 samples):
    - its even- and odd-indexed samples: two runs drawn from the same distribution;
    - the real samples, then the same samples scaled by 1.2 (a synthetic 20 % slower run);
    - scaled by 1.02: a real-looking but negligible shift."""
    with open_store(db) as store:
        real = next(r for r in gather(store, runs=(3,)).targets[0].rows if r.variant.recipe == "onnx:int8-static")
        samples = real.samples
        assert len(samples) > 200
        even = _add_run(store, "digits-cnn", "local", real.measurement, samples[0::2], "real samples, even indices")
        odd = _add_run(store, "digits-cnn", "local", real.measurement, samples[1::2], "real samples, odd indices")
        base = _add_run(store, "digits-cnn", "local", real.measurement, samples, "real samples")
        slower = _add_run(store, "digits-cnn", "local", real.measurement, [x * 1.2 for x in samples],
                          "SYNTHETIC: the real samples x 1.2")
        slightly = _add_run(store, "digits-cnn", "local", real.measurement, [x * 1.02 for x in samples],
                            "SYNTHETIC: the real samples x 1.02")

        same = compare(*reversed(columns(store, runs=(even, odd))))
        d = same.deltas[(1, "onnx:int8-static")]
        assert d.verdict == "same" and d.p_value > 0.01 and not same.regressions

        worse = compare(*reversed(columns(store, baseline=base, runs=(slower,))))
        d = worse.deltas[(1, "onnx:int8-static")]
        assert d.verdict == "slower" and d.change == pytest.approx(0.2, abs=1e-9) and d.p_value < 1e-6
        assert d.ci_overlap is False

        tiny = compare(*reversed(columns(store, baseline=base, runs=(slightly,))))
        assert tiny.deltas[(1, "onnx:int8-static")].verdict == "same"  # under --min-change

    proc = run_cli("check", "--db", str(db), "--target", "local", "--run", str(slower), "--baseline", str(base))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL baseline: significant regression" in proc.stdout and "+20.0%" in proc.stdout
    proc = run_cli("check", "--db", str(db), "--target", "local", "--run", str(odd), "--baseline", str(even))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS baseline: no significant change" in proc.stdout


def test_check_limits_exit_codes(db):
    ok = run_cli("check", "--db", str(db), "--target", "local", "--max-p90-ms", "1000", "--max-accuracy-drop", "0.01")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS max-p90-ms: onnx:int8-static p90 0.057 ms <= 1000 ms on local, run 3" in ok.stdout
    bad = run_cli("check", "--db", str(db), "--target", "local", "--max-p90-ms", "0.01", "--json")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["passed"] is False
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["max-p90-ms"] and "p90 0.057 ms > 0.01 ms" in failed[0]["message"]
    drop = run_cli("check", "--db", str(db), "--target", "local", "--max-accuracy-drop", "-0.001")
    assert drop.returncode == 1 and "accuracy drop 0.00 pts > -0.10" in drop.stdout


def test_compare_and_check_bad_input(db):
    for args, words in ((("compare", "--target", "local"), "nothing to compare"),
                        (("compare", "--run", "1", "--run", "2"), "Fix: add --target"),
                        (("compare", "--baseline", "3", "--target", "local"), "latest run on local"),
                        (("check", "--target", "local", "--run", "2"), "did not measure on local"),
                        (("check", "--target", "mars"), "no measurements on mars")):
        proc = run_cli(*args, "--db", str(db))
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)


def test_html_from_captured_store(db):
    """The page's structure without a browser (the slow test loads it in Chromium)."""
    from edgekit.report.html import render

    with open_store(db) as store:
        page = render(gather(store, runs=(1, 2)))
    for kind in ("pareto", "energy", "latency", "cross-target"):
        assert f'data-plot="{kind}"' in page
    assert page.count('<circle class="point') == 4 and page.count('<rect class="box') == 4
    with open_store(db) as store:
        p90 = [r["p90_ms"] for r in store.rows("SELECT p90_ms FROM measurements WHERE run_id IN (1, 2) ORDER BY id")]
    for value in p90:
        assert f'data-key="p90_ms" data-value="{json.dumps(value)}"' in page
    assert "<script" not in page
    assert not re.search(r'(src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)', page)


def test_store_written_before_run_links_still_reports(db, tmp_path, monkeypatch):
    """Stores from before run_variants/run_profiles: a run's own measurements, selection with defaults
    and a note saying so (the `fast` profile is not on the search path here)."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    con = sqlite3.connect(db)
    with con:
        con.execute("DELETE FROM run_variants")
        con.execute("DELETE FROM run_profiles")
    con.close()
    with open_store(db) as store:
        t = gather(store, runs=(1,)).targets[0]
    assert [r.variant.recipe for r in t.rows] == ["onnx:fp32", "onnx:int8-static"]
    assert t.objective == "p90_ms" and t.constraints == {} and t.chosen is not None
    assert any("did not record its profile" in n for n in t.notes)
