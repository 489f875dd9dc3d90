"""Selection is pure: these inputs are plain data, the rules are the product."""

from edgekit.select import select
from edgekit.records import Measurement, Variant
from edgekit.settings import SelectSettings


def variant(vid, drop=0.0, size=1000, status="ok"):
    return Variant(id=vid, recipe=vid, format="onnx", precision="fp32", runtime="onnxruntime", model="m",
                   sha256=vid, size_bytes=size, status=status, error=None if status == "ok" else "boom",
                   metrics={"accuracy_drop": drop})


def measured(vid, p90, ci=None, rss=50.0, status="ok"):
    ci = ci or (p90 * 0.9, p90 * 0.95)
    return Measurement(target="t", variant_id=vid, sha256=vid, status=status,
                       stats={"p90_ms": p90, "p50_ms": p90 * 0.9, "ci95_median_ms": list(ci)},
                       memory={"peak_rss_mb": rss}, error_kind=None if status == "ok" else "load_failed",
                       error_message=None if status == "ok" else "bad file")


def test_fastest_within_accuracy_budget_wins_and_every_reject_has_a_reason():
    vs = [variant("fp32"), variant("int8", drop=0.03, size=300), variant("fp16", drop=0.005, size=500)]
    ms = {"fp32": measured("fp32", 10.0, (8.9, 9.1)), "int8": measured("int8", 4.0, (3.5, 3.7)),
          "fp16": measured("fp16", 6.0, (5.3, 5.5))}
    sel = select(vs, ms, SelectSettings("p90_ms", {"max_accuracy_drop": 0.01}))
    assert sel.chosen.variant.id == "fp16"
    by_id = {r.variant.id: r for r in sel.rows}
    assert by_id["int8"].status == "rejected" and "accuracy drop 3.00 pts > 1.00" in by_id["int8"].reason
    assert by_id["fp32"].status == "eligible" and "+67%" in by_id["fp32"].reason


def test_overlapping_intervals_are_a_tie_broken_by_size():
    vs = [variant("a", size=2000), variant("b", size=500)]
    ms = {"a": measured("a", 5.00, (4.40, 4.60)), "b": measured("b", 5.05, (4.50, 4.70))}
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "b"
    assert "within noise" in sel.chosen.reason


def test_clear_difference_is_not_a_tie():
    vs = [variant("a", size=2000), variant("b", size=500)]
    ms = {"a": measured("a", 5.0, (4.4, 4.5)), "b": measured("b", 6.0, (5.4, 5.5))}
    assert select(vs, ms, SelectSettings("p90_ms", {})).chosen.variant.id == "a"


def test_failures_and_memory_limits_reject_with_reasons():
    vs = [variant("broken", status="failed"), variant("crashed"), variant("fat"), variant("unmeasured")]
    ms = {"crashed": measured("crashed", 1.0, status="failed"), "fat": measured("fat", 2.0, rss=900)}
    sel = select(vs, ms, SelectSettings("p90_ms", {"max_peak_rss_mb": 256}))
    assert sel.chosen is None
    reasons = {r.variant.id: r.reason for r in sel.rows}
    assert reasons["broken"] == "build failed: boom"
    assert reasons["crashed"].startswith("benchmark failed (load_failed)")
    assert "peak RSS 900 MB > 256" in reasons["fat"]
    assert reasons["unmeasured"] == "not measured on this target"


def test_size_objective_and_missing_accuracy():
    vs = [variant("big", size=9000), variant("small", size=100)]
    vs[1].metrics = {}
    ms = {"big": measured("big", 1.0), "small": measured("small", 1.0)}
    sel = select(vs, ms, SelectSettings("size_bytes", {"max_accuracy_drop": 0.01}))
    assert sel.chosen.variant.id == "big"
    assert "no fidelity figures" in {r.variant.id: r for r in sel.rows}["small"].reason


def emulated(m: Measurement) -> Measurement:
    m.document = {"emulation": {"emulated": True, "program": "/usr/bin/qemu-aarch64-static"}}
    return m


def test_emulated_timings_are_never_ranked_but_accuracy_still_rejects():
    vs = [variant("fp32", size=2000), variant("int8", size=500), variant("lossy", drop=0.05)]
    ms = {k: emulated(measured(k, p90)) for k, p90 in (("fp32", 50.0), ("int8", 20.0), ("lossy", 1.0))}
    sel = select(vs, ms, SelectSettings("p90_ms", {"max_accuracy_drop": 0.01, "max_p90_ms": 5.0}))
    assert sel.chosen is None and sel.emulated
    by_id = {r.variant.id: r for r in sel.rows}
    # The p90 limit is not applied to the emulator's timings; the accuracy budget is.
    assert by_id["fp32"].status == by_id["int8"].status == "eligible"
    assert "emulated: not a latency figure" in by_id["int8"].reason
    assert by_id["lossy"].status == "rejected" and "accuracy drop" in by_id["lossy"].reason
    # Size needs no timing: it may still choose on an emulated device.
    assert select(vs, ms, SelectSettings("size_bytes", {"max_accuracy_drop": 0.01})).chosen.variant.id == "int8"


def test_outputs_that_differ_on_the_device_reject_even_the_fastest():
    vs = [variant("fast"), variant("slow")]
    ms = {"fast": measured("fast", 1.0), "slow": measured("slow", 9.0)}
    ms["fast"].document = {"parity": {"passed": False, "problems": ["top-1 agreement 0.700 < 0.980 on the host - 0.020"]}}
    ms["slow"].document = {"parity": {"passed": True, "samples": 64}}
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "slow"
    fast = next(r for r in sel.rows if r.variant.id == "fast")
    assert fast.status == "rejected" and fast.reason.startswith("outputs on the device differ from the host's: top-1")


def test_a_named_variant_replaces_the_choice_unless_the_device_ruled_it_out():
    import pytest

    from edgekit.errors import SelectionError, UsageError
    from edgekit.select import choose_named

    vs = [variant("onnx:fp32"), variant("onnx:int8-static", drop=0.05)]
    ms = {v.id: measured(v.id, p) for v, p in zip(vs, (2.0, 1.0))}
    sel = select(vs, ms, SelectSettings("p90_ms", {"max_accuracy_drop": 0.01}))
    with pytest.raises(SelectionError, match="accuracy drop"):
        choose_named(sel, "onnx:int8-static", "pi")
    with pytest.raises(UsageError, match="not one of the profile's variants"):
        choose_named(sel, "tflite:fp32", "pi")
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "onnx:int8-static"
    choose_named(sel, "onnx:fp32", "pi")
    assert sel.chosen.variant.id == "onnx:fp32" and sel.chosen.reason.startswith("named with --variant")
    assert [r.status for r in sel.rows].count("chosen") == 1


def test_a_named_variant_matches_by_the_canonical_name_the_caller_gives():
    """Selection knows nothing of recipe spelling: the caller passes the canonical name (registry.canonical_name)."""
    import pytest

    from edgekit.compress.registry import canonical_name
    from edgekit.errors import UsageError
    from edgekit.select import choose_named

    vs = [variant("onnx:fp32"), variant("onnx:int8-static?calibration=entropy&types=u8u8")]
    ms = {v.id: measured(v.id, p) for v, p in zip(vs, (1.0, 2.0))}
    typed = "onnx:int8-static?types=U8U8&calibration=entropy"
    with pytest.raises(UsageError, match=r"--variant onnx:int8-static\?types=U8U8"):
        choose_named(select(vs, ms, SelectSettings("p90_ms", {})), typed, "pi")
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    choose_named(sel, typed, "pi", canonical_name(typed))
    assert sel.chosen.variant.recipe == "onnx:int8-static?calibration=entropy&types=u8u8"
    assert canonical_name("onnx-fp32-1a2b3c4d") == "onnx-fp32-1a2b3c4d", "a variant id is left as it is"


def paired(m: Measurement, ratio: float, ci: tuple[float, float], baseline: str = "onnx:fp32",
           objective: str = "p90_ms") -> Measurement:
    """Per-round ratios against the baseline, as `rounds.paired_ratios` stores them."""
    m.document = {**m.document, "paired": {"baseline": baseline, "rounds": 5, "ratio": ratio, "ci95": list(ci),
                                           "stats": {objective: {"ratio": ratio, "ci95": list(ci)}}}}
    return m


def test_paired_ratios_rank_and_the_reason_names_the_baseline():
    vs = [variant("fp32", size=4000), variant("int8", size=1000), variant("fp16", size=2000)]
    # The pooled figures (5.0 vs 4.8) would pick fp16; the paired ratios say int8 is faster in every round.
    ms = {"fp32": paired(measured("fp32", 8.0, (7.0, 7.2)), 1.0, (1.0, 1.0)),
          "int8": paired(measured("int8", 5.0, (4.4, 4.6)), 0.62, (0.58, 0.66)),
          "fp16": paired(measured("fp16", 4.8, (4.2, 4.5)), 0.75, (0.70, 0.80))}
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "int8"
    assert "p90_ms ratio 0.62 [0.58, 0.66] vs onnx:fp32" in sel.chosen.reason
    by_id = {r.variant.id: r for r in sel.rows}
    assert "+21% vs chosen" in by_id["fp16"].reason and "ratio 0.75 [0.70, 0.80]" in by_id["fp16"].reason
    assert "within noise" not in by_id["fp16"].reason


def test_overlapping_ratio_intervals_tie_and_separate_ones_do_not():
    vs = [variant("big", size=4000), variant("small", size=1000)]
    # The medians' intervals are apart, the paired ratios' overlap: a tie, the smaller artifact wins.
    ms = {"big": paired(measured("big", 5.0, (4.4, 4.5)), 0.60, (0.55, 0.66)),
          "small": paired(measured("small", 6.0, (5.4, 5.5)), 0.64, (0.62, 0.70))}
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "small" and "paired ratio CIs overlap" in sel.chosen.reason
    assert "within noise but larger" in {r.variant.id: r for r in sel.rows}["big"].reason
    # The medians' intervals overlap, the paired ratios' do not: no tie, the faster one wins.
    ms = {"big": paired(measured("big", 5.0, (4.4, 4.6)), 0.60, (0.58, 0.61)),
          "small": paired(measured("small", 5.05, (4.5, 4.7)), 0.64, (0.63, 0.66))}
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "big" and "within noise" not in sel.chosen.reason


def test_without_ratios_for_every_row_the_median_rule_applies():
    vs = [variant("a", size=2000), variant("b", size=500)]
    # b has no ratio (one round, or an older store): the medians' overlapping intervals decide, as before.
    ms = {"a": paired(measured("a", 5.00, (4.40, 4.60)), 0.5, (0.49, 0.51)), "b": measured("b", 5.05, (4.50, 4.70))}
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert sel.chosen.variant.id == "b" and "median CIs overlap" in sel.chosen.reason
    # Ratios against different baselines are not comparable either.
    ms["b"] = paired(measured("b", 5.05, (4.50, 4.70)), 0.9, (0.89, 0.91), baseline="tflite:fp32")
    sel = select(vs, ms, SelectSettings("p90_ms", {}))
    assert "median CIs overlap" in sel.chosen.reason and "ratio" not in sel.chosen.reason
    # A ratio for another statistic than the objective is not used for it.
    ms = {k: paired(measured(k, p90, ci), r, rci, objective="p50_ms")
          for k, p90, ci, r, rci in (("a", 5.0, (4.4, 4.5), 0.9, (0.89, 0.91)), ("b", 6.0, (5.4, 5.5), 0.5, (0.4, 0.6)))}
    assert select(vs, ms, SelectSettings("p90_ms", {})).chosen.variant.id == "a"
    assert select(vs, ms, SelectSettings("p50_ms", {})).chosen.variant.id == "b"
