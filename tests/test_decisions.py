"""Decisions are recorded when `select` makes them and reports show the recorded ones: a later
change to the selection rules does not rewrite what past runs chose. Real SQLite; the captured
store of tests/report_store.py for the report side."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edgekit.records import Decision, Measurement, Variant
from edgekit.report import formats
from edgekit.report.data import gather, open_store, target_report
from edgekit.results import MIGRATIONS, VERSION, ResultsStore
from edgekit.select import select
from edgekit.settings import SelectSettings
from report_store import TABLES, captured

FIXTURE = Path(__file__).parent / "fixtures" / "report_store.json"
GOLDEN = Path(__file__).parent / "golden"


def variant(vid: str, drop: float, size: int, cosine: float = 0.999) -> Variant:
    return Variant(id=vid, recipe=vid, format="onnx", precision="fp32", runtime="onnxruntime", model="m",
                   sha256=vid, size_bytes=size, metrics={"accuracy_drop": drop, "mean_cosine": cosine})


def measured(vid: str, p90: float, rss: float = 40.0) -> Measurement:
    return Measurement(target="t", variant_id=vid, sha256=vid, status="ok",
                       stats={"p90_ms": p90, "p50_ms": p90 * 0.9, "ci95_median_ms": [p90 * 0.9, p90 * 0.92]},
                       memory={"peak_rss_mb": rss})


def test_each_row_records_status_reason_objective_value_and_constraint_figures():
    vs = [variant("fp32", 0.0, 4_000_000), variant("int8", 0.03, 1_000_000)]
    ms = {"fp32": measured("fp32", 10.0), "int8": measured("int8", 4.0, rss=float("nan"))}
    selection = select(vs, ms, SelectSettings("p90_ms", {"max_accuracy_drop": 0.01}))
    fp32, int8 = selection.decisions()
    assert fp32 == Decision("fp32", "chosen", selection.rows[0].reason, "p90_ms", 10.0, fp32.figures)
    assert fp32.figures["max_p90_ms"] == 10.0 and fp32.figures["max_size_mb"] == 4.0
    assert fp32.figures["max_accuracy_drop"] == 0.0 and fp32.figures["min_cosine"] == 0.999
    assert fp32.figures["max_metric_drop"] is None  # no user metric: not known, not zero
    assert int8.status == "rejected" and "accuracy drop 3.00 pts" in int8.reason
    assert int8.figures["max_accuracy_drop"] == 0.03
    assert int8.figures["max_peak_rss_mb"] is None  # a non-finite figure is recorded as unknown
    json.dumps([d.to_dict() for d in selection.decisions()], allow_nan=False)  # storable as strict JSON


def test_the_store_keeps_decisions_in_order_and_a_second_record_replaces_the_first(tmp_path):
    with ResultsStore(tmp_path / "results.db") as store:
        run_id = store.start_run("profile", "m", "fast")
        first = [Decision("b", "chosen", "lowest p90_ms", "p90_ms", 2.5, {"max_p90_ms": 2.5}),
                 Decision("a", "eligible", "p90_ms +20% vs chosen", "p90_ms", 3.0, {"max_p90_ms": 3.0})]
        store.save_decisions(run_id, "pi", first)
        assert store.decisions(run_id, "pi") == first
        assert store.decisions(run_id, "other") == [] and store.decisions(run_id + 1, "pi") == []
        second = [Decision("a", "chosen", "named with --variant", "p90_ms", None, {})]
        store.save_decisions(run_id, "pi", second)
        assert store.decisions(run_id, "pi") == second


def version_1_store(path: Path) -> Path:
    """A store exactly as the previous schema version left it: version 1's tables, user_version 1,
    the captured rows of three real runs."""
    doc = json.loads(FIXTURE.read_text())
    db = sqlite3.connect(path)
    with db:
        for statement in filter(str.strip, MIGRATIONS[0].split(";")):
            db.execute(statement)
        for table in TABLES:
            for row in doc[table]:
                db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           tuple(row.values()))
    db.execute("PRAGMA user_version = 1")
    db.close()
    return path


def test_a_version_1_store_gains_the_decisions_table_and_its_runs_are_selected_again(tmp_path):
    assert VERSION == 2
    old = version_1_store(tmp_path / "v1.db")
    with open_store(old) as store:
        assert store.decisions(3, "local") == []  # its runs recorded none
        report = gather(store)
        assert formats.to_json(report) == (GOLDEN / "report.json").read_text()
    con = sqlite3.connect(old)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 2
        assert [r[0] for r in con.execute("SELECT COUNT(*) FROM runs")] == [3]  # every row kept
    finally:
        con.close()


def test_a_report_shows_the_recorded_decision_not_what_select_says_now(tmp_path, monkeypatch):
    import edgekit.report.data as data

    with open_store(captured(tmp_path / "results.db")) as store:
        now = target_report(store, 3, "local")
        assert now.chosen is not None
        # The run records the decision as select makes it today ...
        rows = {r.variant.id: r for r in now.rows}
        recorded = [Decision(v, r.status, r.reason, now.objective, r.stat("p90_ms"), {}) for v, r in rows.items()]
        store.save_decisions(3, "local", recorded)
        same = target_report(store, 3, "local")
        assert [(r.variant.id, r.status, r.reason) for r in same.rows] == \
               [(r.variant.id, r.status, r.reason) for r in now.rows]

        # ... and a later selection rule (here: one that rejects everything) does not rewrite it.
        def stricter(variants, measurements, settings):
            raise AssertionError("a run with recorded decisions is not selected again")

        monkeypatch.setattr(data, "select", stricter)
        later = target_report(store, 3, "local")
        assert later.chosen.variant.id == now.chosen.variant.id
        assert [(r.variant.id, r.status, r.reason) for r in later.rows] == \
               [(r.variant.id, r.status, r.reason) for r in now.rows]
        with pytest.raises(AssertionError, match="not selected again"):
            target_report(store, 1, "local")  # run 1 recorded nothing: it is the one selected again

        # A recorded decision that differs from today's rules is shown as recorded.
        other = next(v for v in rows if v != now.chosen.variant.id)
        store.save_decisions(3, "local", [Decision(v, "chosen" if v == other else "eligible",
                                                   "recorded then" if v == other else "not chosen then",
                                                   now.objective, None, {}) for v in rows])
        past = target_report(store, 3, "local")
        assert past.chosen.variant.id == other and past.chosen.reason == "recorded then"

