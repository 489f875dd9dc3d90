"""A hostile device: the real agent behind a wrapper that lies on the way out, driven through
`profile`, `deploy`, `check` and `report` like any target. Whatever it says, nothing it measured
wrongly is chosen or installed, the bad measurement is stored as failed with its reason, every
command ends in its documented exit code without a traceback, and nothing it sends reaches the
terminal as escape sequences or markup."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import run_cli

# The target's `python`: runs the real agent, then rewrites what it printed or wrote, per MODE.
PERSONA = '''#!{python}
import json, os, subprocess, sys
MODE = {mode!r}
args = sys.argv[1:]
command = args[1] if len(args) > 1 and args[0].endswith(".pyz") else None
if command not in ("bench", "run", "probe") or (command == "probe" and MODE != "markup"):
    os.execv(sys.executable, [sys.executable] + args)
done = subprocess.run([sys.executable] + args, stdout=subprocess.PIPE)
text = done.stdout.decode()
doc = json.loads(text.strip().splitlines()[-1])
if command == "run" and MODE == "nan-outputs" and "outputs" in doc:
    import numpy as np
    with np.load(doc["outputs"]) as f:
        arrays = {{k: np.full_like(v, np.nan) for k, v in f.items()}}
    with open(doc["outputs"], "wb") as fh:
        np.savez(fh, **arrays)
if command == "probe" and MODE == "markup":
    doc["hostname"] = "[bold]EVILHOST[/bold]\\x1b[31m\\x9b2J"
    doc.setdefault("cpu", {{}})["model"] = "\\x1b]8;;http://example.invalid\\x07[link=x]cpu[/link]\\u202e"
if command == "bench" and "latency" in doc:
    if MODE == "string-figure":
        doc["latency"]["p90_ms"] = "fast"
    elif MODE == "negative-memory":
        doc["memory"]["peak_rss_mb"] = -5.0
    elif MODE == "huge-document":
        doc["warnings"] = ["x" * (30 << 20)]
    elif MODE == "markup":
        doc["runtime"]["name"] = "[bold red]onnxruntime[/x]\\x1b[31m"
        doc["warnings"] = ["[/blink] \\x1b]0;pwned\\x07 \\x9b2J boom"]
sys.stdout.write(json.dumps(doc) + "\\n")
sys.exit(done.returncode)
'''

ONE = ('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nwarmup_s = 0.05\nmin_runs = 20\nmin_s = 0.1\nmax_s = 5.0\n'
       'rounds = 1\nparity_samples = 16\n')
ESCAPES = ("\x1b", "\x9b", "\x07")


def persona(workdir: Path, tmp_path: Path, mode: str) -> str:
    python = tmp_path / f"{mode}-python"
    python.write_text(PERSONA.format(python=sys.executable, mode=mode))
    python.chmod(0o755)
    (workdir / "targets").mkdir(exist_ok=True)
    (workdir / "targets" / "hostile.toml").write_text(f'transport = "local"\npython = "{python}"\n'
                                                      f'workdir = "~/hostile"\n')
    (workdir / "profiles" / "one.toml").write_text(ONE)
    return "hostile"


def no_traceback(proc, *codes: int) -> None:
    assert proc.returncode in codes, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert not any(e in proc.stdout + proc.stderr for e in ESCAPES)


@pytest.mark.parametrize("mode, kind, words", [
    ("nan-outputs", None, "outputs on the device differ from the host's"),
    ("string-figure", "bad_document", "bench.latency.p90_ms is 'fast', not a number"),
    ("negative-memory", "bad_document", "bench.memory.peak_rss_mb is -5.0"),
    ("huge-document", "bad_document", "over the 16 MB a document may be"),
])
def test_a_lying_device_gets_nothing_installed_and_its_lie_is_stored_as_such(workdir, tmp_path, mode, kind, words):
    target = persona(workdir, tmp_path, mode)
    deploy = run_cli("deploy", "--target", target, "--profile", "one")
    no_traceback(deploy, 4)
    assert words in " ".join((deploy.stdout + deploy.stderr).split()), deploy.stdout + deploy.stderr
    assert not (Path.home() / "hostile" / "deployments").exists() or \
        not any((Path.home() / "hostile" / "deployments").rglob("current")), "nothing installed"

    db = sqlite3.connect(workdir / ".edgekit" / "results.db")
    rows = db.execute("SELECT status, error_kind, p90_ms, document FROM measurements WHERE target=?",
                      (target,)).fetchall()
    assert rows
    if kind:  # the figure itself was a lie: the measurement is failed, nothing of the document kept
        assert all(r[:3] == ("failed", kind, None) for r in rows) and all(len(r[3]) < 100_000 for r in rows)
    else:  # the timings were true, the outputs were not: measured, and judged by its device parity
        parity = [json.loads(r[3])["parity"] for r in rows]
        assert all(p["passed"] is False for p in parity), parity

    check = run_cli("check", "--target", target)
    no_traceback(check, 1)
    assert "PASS" not in check.stdout
    for fmt in ("--table", "--json"):
        report = run_cli("report", fmt, "--target", target)
        no_traceback(report, 0)
    json.loads(run_cli("report", "--json", "--target", target).stdout,
               parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))


def test_markup_and_escapes_from_a_device_are_printed_as_text(workdir, tmp_path, monkeypatch):
    target = persona(workdir, tmp_path, "markup")
    monkeypatch.setenv("COLUMNS", "2000")
    profile = run_cli("profile", "--target", target, "--profile", "one")
    no_traceback(profile, 0)
    assert "[/blink]" in profile.stdout + profile.stderr, "the device's warning is shown, as text"
    deploy = run_cli("deploy", "--target", target, "--profile", "one", "--reuse")
    no_traceback(deploy, 0)
    for command in (("check", "--target", target), ("report", "--table"), ("report", "--json"),
                    ("report", "--markdown"), ("status", "--target", target)):
        no_traceback(run_cli(*command), 0)
    # The probe lied too (hostname, CPU model): shown as text, no escape, no bidi override.
    shown = run_cli("targets", "check", target)
    no_traceback(shown, 0)
    assert "[bold]EVILHOST[/bold]" in shown.stdout and "\u202e" not in shown.stdout + shown.stderr, shown.stdout
