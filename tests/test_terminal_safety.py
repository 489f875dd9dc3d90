"""Strings a device or an old store hands back reach the terminal as plain text, and --json is
strict JSON: a captured store (tests/report_store.py) with hostile rows, through the real CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli
from edgekit.report.safe import finite, printable, strict_json
from report_store import captured

HOSTILE = "boom [/x] [bold]\x1b[31mred\x1b[0m\x1b]0;pwned\x07 \x9b2J\u202eevil\nnext\tcol\x00"


def strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_printable_removes_escapes_and_controls_keeps_text():
    assert printable(HOSTILE) == "boom [/x] [bold]red evil next col"
    assert printable("résumé ★ µs") == "résumé ★ µs"
    assert printable("\x1b") == "" and printable("\x1b[") == "" and printable(3) == "3"


def test_non_finite_numbers_become_null():
    doc, count = finite({"a": float("nan"), "b": [1.0, float("-inf"), {"c": float("inf")}], "d": "NaN", "e": 2})
    assert doc == {"a": None, "b": [1.0, None, {"c": None}], "d": "NaN", "e": 2} and count == 3
    assert strict(strict_json({"x": float("nan")})) == {"x": None}


def test_cli_json_is_strict_with_a_note(capsys):
    from edgekit.report.output import emit_json

    emit_json({"max_abs_diff": float("nan"), "p90_ms": float("-inf"), "ok": 1.5})
    captured_out = capsys.readouterr()
    assert strict(captured_out.out) == {"max_abs_diff": None, "p90_ms": None, "ok": 1.5}
    assert "2 non-finite numbers" in captured_out.err


@pytest.fixture
def hostile_db(tmp_path) -> Path:
    """The captured store, with one failed measurement whose message, one model name and one parity
    figure came from a hostile device."""
    db = captured(tmp_path / "results.db")
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE runs SET model=? WHERE id=3", ("digits[/x]\x1b[2J",))
        mid, doc = con.execute("SELECT id, document FROM measurements WHERE run_id=3 ORDER BY id").fetchone()
        con.execute("UPDATE measurements SET status='failed', error_kind='bad_document', error_message=? "
                    "WHERE id=?", (HOSTILE, mid))
        mid, doc = con.execute("SELECT id, document FROM measurements WHERE run_id=3 ORDER BY id DESC").fetchone()
        doc = json.loads(doc)
        doc["parity"] = {"passed": False, "samples": 8, "max_abs_diff": float("nan"),
                         "problems": ["8 NaN or infinite output values on the device \x1b[5m[/blink]"]}
        con.execute("UPDATE measurements SET document=? WHERE id=?", (json.dumps(doc), mid))
    con.close()
    return db


def test_report_table_prints_hostile_strings_as_text(hostile_db, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # one line per row, nothing wrapped
    proc = run_cli("report", "--db", str(hostile_db), "--table", "--target", "local")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for bad in ("\x1b", "\x9b", "\x07", "\u202e", "\x00"):
        assert bad not in proc.stdout
    assert "local: digits[/x], run 3" in proc.stdout
    assert "(bad_document): boom [/x] [bold]red evil next col" in proc.stdout
    assert "NaN or infinite output values on the device [/blink]" in proc.stdout


def test_report_and_check_json_are_strict(hostile_db):
    proc = run_cli("report", "--db", str(hostile_db), "--json", "--target", "local")
    assert proc.returncode == 0, proc.stderr
    doc = strict(proc.stdout)
    rows = doc["targets"][0]["variants"]
    assert any(r["device_parity"] and r["device_parity"]["max_abs_diff"] is None for r in rows)
    proc = run_cli("check", "--db", str(hostile_db), "--target", "local", "--max-p90-ms", "1000")
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stdout
    proc = run_cli("check", "--db", str(hostile_db), "--target", "local", "--json")
    strict(proc.stdout)


def test_error_lines_keep_brackets_and_drop_escapes(workdir):
    (workdir / "targets").mkdir()
    proc = run_cli("status", "--target", "nope[/x]\x1b[2J")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "\x1b" not in proc.stderr and "nope[/x]" in proc.stderr


def test_report_markdown_prints_hostile_strings_as_text(hostile_db):
    proc = run_cli("report", "--db", str(hostile_db), "--markdown", "--target", "local")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    for bad in ("\x1b", "\x9b", "\x07", "\u202e", "\x00"):
        assert bad not in proc.stdout
    assert "boom [/x] [bold]red evil next col" in proc.stdout
