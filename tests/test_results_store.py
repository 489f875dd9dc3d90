"""The results store's schema version: stores written before it had one are migrated in place and
report exactly as before; a store from a newer edgekit is refused in one line; the report reads
only through the store's methods. Real SQLite, the captured store of tests/report_store.py."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli
from edgekit.errors import StoreError
from edgekit.report import formats
from edgekit.report.data import gather, open_store
from edgekit.results import MIGRATIONS, VERSION, ResultsStore
from report_store import TABLES, captured, dump

FIXTURE = Path(__file__).parent / "fixtures" / "report_store.json"
GOLDEN = Path(__file__).parent / "golden"
REPORT = Path(__file__).resolve().parent.parent / "edgekit" / "report"


def unversioned_store(path: Path, dropped: tuple[str, ...] = ()) -> Path:
    """A store as edgekit wrote it before stores carried a version: the released schema, user_version 0,
    the captured rows; `dropped` leaves out tables that older stores did not have yet."""
    statements = [s for s in MIGRATIONS[0].split(";") if s.strip()]
    doc = json.loads(FIXTURE.read_text())
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            if not any(f" {table} " in statement for table in dropped):
                db.execute(statement)
        for table in TABLES:
            if table in dropped:
                continue
            for row in doc[table]:
                db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           tuple(row.values()))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()
    return path


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_a_new_store_has_the_current_schema_version(tmp_path):
    ResultsStore(tmp_path / "results.db").close()
    assert VERSION >= 1 and user_version(tmp_path / "results.db") == VERSION


def test_an_unversioned_store_is_migrated_in_place_and_reports_the_same(tmp_path):
    old = unversioned_store(tmp_path / "old.db")
    before = dump(old)
    with open_store(old) as store:
        report = gather(store)
        assert [(t.target, t.run_id) for t in report.targets] == [("local", 3), ("local2", 2)]
        assert formats.to_json(report) == (GOLDEN / "report.json").read_text()
    assert user_version(old) == VERSION
    assert dump(old) == before  # every row kept as it was
    with open_store(captured(tmp_path / "new.db")) as store:
        assert formats.to_csv(gather(store)) == formats.to_csv(report)


def test_a_store_from_before_run_links_gains_the_tables_and_reports_its_runs(tmp_path):
    old = unversioned_store(tmp_path / "old.db", dropped=("run_variants", "run_profiles"))
    with ResultsStore(old) as store:
        assert store.run_links(3, "local") == [] and store.run_profile(3) is None
        measured = store.run_measured(3, "local")
        report = gather(store, runs=(3,))
    assert user_version(old) == VERSION
    rows = report.targets[0].rows
    assert measured and [r.variant.id for r in rows] == [v for v, _ in measured]
    assert all(r.measurement is not None and r.measurement.run_id == 3 and r.measured_at for r in rows)
    assert report.targets[0].unfinished is None  # no recorded profile: nothing says it stopped


def test_a_store_from_a_newer_edgekit_is_refused_in_one_line(tmp_path):
    db = captured(tmp_path / "results.db")
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match=rf"schema version {VERSION + 1}, written by a newer edgekit.*"
                                         r"Fix: upgrade edgekit"):
        ResultsStore(db)
    proc = run_cli("report", "--table", "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"the results store {db} has schema version {VERSION + 1}" in errors[0] and "Fix:" in errors[0]
    assert user_version(db) == VERSION + 1  # left exactly as found


def test_a_migration_that_fails_leaves_the_store_unversioned(tmp_path, monkeypatch):
    import edgekit.results as results

    old = unversioned_store(tmp_path / "old.db")
    monkeypatch.setattr(results, "MIGRATIONS", (MIGRATIONS[0] + ";\nCREATE TABLE runs (id INTEGER)",))
    monkeypatch.setattr(results, "VERSION", 1)
    with pytest.raises(StoreError, match="already exists"):
        ResultsStore(old)
    assert user_version(old) == 0
    monkeypatch.undo()
    ResultsStore(old).close()
    assert user_version(old) == VERSION


def test_the_report_reads_only_through_the_store():
    """No SQL in edgekit/report/, no private name imported, no raw rows or connection touched."""
    for f in sorted(REPORT.glob("*.py")):
        text = f.read_text()
        assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA)\b", text), f"SQL in {f.name}"
        assert ".rows(" not in text and "sqlite3" not in text and ".db." not in text, f"raw store access in {f.name}"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{f.name} imports private {private} from {node.module}"
