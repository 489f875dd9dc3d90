"""The agent's reading of how much CPU other processes took during the measured window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edgekit.agent import cpuload
from edgekit.rounds import Round, merge

SPIN = "import os, time\nos.sched_setaffinity(0, {%d})\nend = time.time() + 5\nwhile time.time() < end: pass\n"


def window(seconds: float) -> dict:
    begin = cpuload.start()
    time.sleep(seconds)
    return cpuload.finish(begin)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two usable cores")
def test_a_spinning_process_on_another_core_shows_up_and_the_agent_itself_does_not():
    cores = sorted(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", SPIN % cores[-1]])
    idle, busy = [], []
    try:
        time.sleep(0.2)  # let it start spinning
        for _ in range(5):  # paused and spinning in turn, so a change in others' load hits both alike
            spinner.send_signal(signal.SIGSTOP)
            idle.append(window(0.25)["other_cpu"])
            spinner.send_signal(signal.SIGCONT)
            busy.append(window(0.25))
    finally:
        spinner.kill()
        spinner.wait()
    if sorted(idle)[2] > 0.3:  # others' load swings more than the spinner adds: nothing to tell apart
        pytest.skip(f"the machine is busy with other work ({sorted(idle)[2]:.0%} while the spinner paused)")
    # One of the usable cores spun for the whole window: about 1/cores more, tolerant of other load.
    assert sorted(b["other_cpu"] for b in busy)[2] > sorted(idle)[2] + 0.5 / len(cores), (idle, busy)
    assert busy[0]["cores"] == len(cores)
    # The measuring process's own work is not "other" load.
    begin = cpuload.start()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    own = cpuload.finish(begin)
    assert own["other_cpu"] < sorted(b["other_cpu"] for b in busy)[2], (own, busy)


def test_without_proc_the_figure_is_null_with_a_reason(tmp_path):
    load = cpuload.finish(cpuload.start(str(tmp_path / "no-proc")))
    assert load["other_cpu"] is None and "not readable" in load["reason"] and load["cores"] >= 1
    assert cpuload.warning(load) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text("cpu  1 2 3 4\n")  # no per-CPU lines: not this kernel's format
    assert cpuload.finish(cpuload.start(str(tmp_path / "proc")))["other_cpu"] is None


def test_warning_above_a_quarter_and_rounds_keep_the_busiest():
    assert cpuload.warning({"other_cpu": 0.2, "cores": 4}) is None
    assert cpuload.warning({"other_cpu": 0.4, "cores": 4}) == (
        "other processes used 40 % of the CPU while measuring: figures may be inflated")

    def doc(other, samples):
        load = {"other_cpu": other, "cores": 2}
        return {"command": "bench", "latency": {"n": len(samples), "p50_ms": 1.0, "cv": 0.0},
                "samples_ms": samples, "window": {"runs": len(samples), "seconds": 0.1},
                "memory": {"peak_rss_mb": 10.0}, "cold": {"load_ms": 1.0}, "load": load,
                "warnings": [w for w in [cpuload.warning(load)] if w] + ["a warning every round"]}

    merged = merge([Round(0, 0, 0.0, 1.0, doc(0.1, [1.0, 1.1])), Round(1, 1, 1.0, 2.0, doc(0.6, [1.2, 1.0])),
                    Round(2, 0, 2.0, 3.0, doc(0.3, [1.0, 1.0]))])
    assert merged["load"] == {"other_cpu": 0.6, "cores": 2}
    # One load warning, for the merged figure, not one per round with its own number.
    assert merged["warnings"] == ["a warning every round", cpuload.warning(merged["load"])]
    assert [r["other_cpu"] for r in merged["rounds"]] == [0.1, 0.6, 0.3]
