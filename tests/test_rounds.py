"""Interleaved rounds on the real `local` device (real agent processes, real onnxruntime, real
SQLite), explicit reuse, and the rules of splitting and pairing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from rich.console import Console

from edgekit import pipeline
from edgekit.device import connect
from edgekit.report.table import selection_table
from edgekit.results import ResultsStore
from edgekit.rounds import paired_ratios, round_order, round_settings
from edgekit.select import select
from edgekit.config import load_target
from edgekit.records import Measurement
from edgekit.settings import BenchSettings, SelectSettings

QUICK = BenchSettings(warmup_s=0.02, min_runs=20, min_s=0.15, max_s=5.0, max_runs=3000, parity_samples=0)


class Steps(pipeline.Events):
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.notes: list[str] = []

    def step(self, label: str) -> None:
        self.steps.append(label)

    def note(self, message: str) -> None:
        self.notes.append(message)


@pytest.fixture
def local(built, tmp_path, workdir):
    """(device, probe, store, the two built variants) on this machine's `local` target."""
    _, variants = built
    device = connect(load_target("local"))
    probe = device.probe()
    store = ResultsStore(tmp_path / "results.db")
    yield device, probe, store, [variants["onnx:fp32"], variants["onnx:int8-static"]]
    store.close()
    device.close()


def run(local, variants, settings, reuse=False, ctx=None):
    device, probe, store, _ = local
    run_id = store.start_run("profile", "digits-cnn", "test")
    events = Steps()
    out = pipeline.bench_variants(device, variants, settings, store, run_id, probe, reuse, events, ctx)
    return run_id, out, events


def test_rounds_interleave_and_merge_into_one_bench_document(local):
    fp32, int8 = local[3]
    run_id, out, events = run(local, [fp32, int8], dataclasses.replace(QUICK, rounds=3))
    # Rotated rounds: A B, B A, A B, each a fresh agent process.
    assert events.steps == ["onnx:fp32 (1/3)", "onnx:int8-static (1/3)", "onnx:int8-static (2/3)",
                            "onnx:fp32 (2/3)", "onnx:fp32 (3/3)", "onnx:int8-static (3/3)"]
    rounds = {v.id: out[v.id].document["rounds"] for v in (fp32, int8)}
    assert [r["position"] for r in rounds[fp32.id]] == [0, 1, 0]
    for index in range(2):  # by the host's clock, every round ends before the next begins: A B | B A | A B
        assert max(r[index]["ended"] for r in rounds.values()) <= min(r[index + 1]["started"] for r in rounds.values())

    for v in (fp32, int8):
        m = out[v.id]
        doc, mine = m.document, rounds[v.id]
        samples = np.array(doc["samples_ms"])
        assert m.stats["n"] == len(samples) == sum(r["n"] for r in mine) == doc["window"]["runs"]
        assert m.stats["p50_ms"] == pytest.approx(np.percentile(samples, 50))
        assert m.stats["p90_ms"] == pytest.approx(np.percentile(samples, 90))
        assert m.stats["ci95_median_ms"][0] <= m.stats["p50_ms"] <= m.stats["ci95_median_ms"][1]
        assert all(r["n"] >= 10 for r in mine)  # min_runs 20 split in 3, floored at 10 a round
        assert m.memory["peak_rss_mb"] == max(r["peak_rss_mb"] for r in mine)
        assert doc["settings"]["rounds"] == 3 and doc["settings"]["min_runs"] == 10
        assert 0.0 <= doc["load"]["other_cpu"] <= 1.0 and doc["load"]["cores"] >= 1
        assert doc["cold"]["load_ms"] > 0 and doc["command"] == "bench"
    # The baseline (first in recipe order) against itself: exactly 1 in every round.
    base = out[fp32.id].paired
    assert base["baseline"] == "onnx:fp32" and base["ratio"] == 1.0 and base["ci95"] == [1.0, 1.0]
    other = out[int8.id].paired
    expected = [b["p50_ms"] / a["p50_ms"] for a, b in zip(rounds[fp32.id], rounds[int8.id])]
    assert other["stats"]["p50_ms"]["per_round"] == pytest.approx(expected)
    assert other["ratio"] == pytest.approx(np.median(expected))
    assert other["ci95"][0] <= other["ratio"] <= other["ci95"][1] and other["rounds"] == 3

    # What was stored is what the report and selection read back: one bench document per variant.
    stored = {m.variant_id: m for m in local[2].measurements(run_id)}
    assert stored[int8.id].document == json.loads(json.dumps(out[int8.id].document))
    assert "vs onnx:fp32" in select([fp32, int8], stored, SelectSettings("p50_ms", {})).chosen.reason


def test_default_measures_afresh_and_reuse_takes_one_whole_run_or_nothing(local):
    fp32, int8 = local[3]
    one = dataclasses.replace(QUICK, rounds=1)  # the reuse rules do not depend on rounds; one is quickest
    first, _, _ = run(local, [fp32], one)
    # int8 was never measured with these settings: --reuse measures both rather than mix runs.
    second, out, events = run(local, [fp32, int8], one, reuse=True)
    assert not any(m.reused for m in out.values())
    assert any("no earlier run" in n and "measuring them all" in n for n in events.notes)
    assert {m.variant_id for m in local[2].measurements(second)} == {fp32.id, int8.id}
    # --reuse with a run that measured both: all of them from that one run, marked.
    third, out, events = run(local, [fp32, int8], one, reuse=True)
    assert {(m.reused, m.reused_from) for m in out.values()} == {(True, second)}
    assert local[2].measurements(third) == []
    assert any(f"reusing run {second}'s measurements of all 2 variants" in n for n in events.notes)
    table = Console(width=250, record=True)
    table.print(selection_table(select([fp32, int8], out, SelectSettings("p90_ms", {})), "local"))
    assert table.export_text().count(f"reused from run {second}") == 2
    # By default everything is measured again, although the store holds a comparable run.
    fourth, out, _ = run(local, [fp32, int8], one)
    assert not any(m.reused for m in out.values())
    assert len(local[2].measurements(fourth)) == 2
    assert first < second < third < fourth


def test_comparable_run_is_the_newest_complete_one_with_the_same_parity_data(tmp_path):
    store = ResultsStore(tmp_path / "results.db")

    def save(shas, key="k", parity=None):
        run_id = store.start_run("profile", "m", "p")
        for sha in shas:
            doc = {"latency": {"p50_ms": 1.0}, **({"parity_data": parity} if parity else {})}
            store.save_measurement(run_id, Measurement("t", sha, sha, "ok", stats=doc["latency"], settings_key=key,
                                                       document=doc))
        return run_id

    data = {"samples": 64, "evaluation": "abc"}
    full = save(["a", "b"], parity=data)
    save(["a"], parity=data)  # newer, but not every variant
    save(["a", "b"], key="other", parity=data)  # newer, other settings
    save(["a", "b"], parity={"samples": 64, "evaluation": "changed"})  # newer, other evaluation data
    run_id, found = store.comparable_run("t", ["a", "b"], "k", data)
    assert run_id == full and set(found) == {"a", "b"}
    assert store.comparable_run("t", ["a", "b"], "k", data, before_run=full) is None
    assert store.comparable_run("t", ["a", "b", "c"], "k", data) is None
    assert store.comparable_run("elsewhere", ["a", "b"], "k", data) is None
    assert store.comparable_run("t", ["a", "b"], "k", None) is None  # those carried parity; this run wants none
    store.close()


def test_round_settings_split_the_time_with_floors():
    s = BenchSettings(warmup_s=0.5, min_runs=200, min_s=2.0, max_s=30.0, max_runs=20000, rounds=4)
    r = round_settings(s)
    assert (r.warmup_s, r.min_runs, r.min_s, r.max_s, r.max_runs) == (0.5, 50, 0.5, 7.5, 5000)
    tiny = round_settings(BenchSettings(min_runs=12, min_s=0.12, max_s=0.2, rounds=10))
    assert tiny.min_runs == 10 and tiny.min_s == pytest.approx(0.1) and tiny.max_s >= tiny.min_s
    fewer = round_settings(BenchSettings(min_runs=5, min_s=0.05, rounds=3))  # never more than asked for
    assert fewer.min_runs == 5 and fewer.min_s == pytest.approx(0.05)
    assert round_settings(BenchSettings(rounds=1)) == BenchSettings(rounds=1)
    assert [round_order("ABC", i) for i in range(4)] == [list("ABC"), list("BCA"), list("CAB"), list("ABC")]


def test_paired_ratios_need_two_shared_rounds():
    def doc(*medians):
        return {"rounds": [{"round": i, "p50_ms": m, "p90_ms": m * 2, "p99_ms": m * 3}
                           for i, m in enumerate(medians) if m is not None]}

    p = paired_ratios(doc(2.0, 2.2, 1.8, 2.0), doc(4.0, 4.0, 4.0, 4.0), "onnx:fp32")
    assert p["ratio"] == pytest.approx(0.5) and p["rounds"] == 4
    assert p["stats"]["p90_ms"]["per_round"] == pytest.approx([0.5, 0.55, 0.45, 0.5])
    assert 0.45 <= p["ci95"][0] <= 0.5 <= p["ci95"][1] <= 0.55
    assert paired_ratios(doc(2.0, 2.2, 1.8, 2.0), doc(4.0, 4.0, 4.0, 4.0), "x") == {**p, "baseline": "x"}  # seeded
    assert paired_ratios(doc(2.0, None), doc(4.0, 4.0), "b") is None  # one shared round: no interval
    assert paired_ratios(doc(2.0), doc(4.0), "b") is None
