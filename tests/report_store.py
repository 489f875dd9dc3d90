"""A results store captured from real `edgekit profile` runs, kept as JSON so golden tests of the
report formats see fixed figures.

Captured on this project's 2-core x86_64 VM with:
    edgekit profile --target local  --profile fast   (run 1)
    edgekit profile --target local2 --profile fast   (run 2; targets/local2.toml: a second local target)
    edgekit profile --target local  --profile fast --force   (run 3)
(the `fast` profile of tests/conftest.py with max_runs = 300), then
    python tests/report_store.py .edgekit/results.db tests/fixtures/report_store.json
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

TABLES = ("runs", "variants", "probes", "measurements", "run_variants", "run_profiles")


def dump(db_path: Path) -> dict:
    db = sqlite3.connect(str(db_path))
    db.row_factory = sqlite3.Row
    return {t: [dict(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in TABLES}


def load(doc: dict, db_path: Path) -> Path:
    """A fresh store (made by ResultsStore, so the schema is the code's) holding the captured rows."""
    from edgekit.results import ResultsStore

    ResultsStore(db_path).close()
    db = sqlite3.connect(str(db_path))
    with db:
        for table in TABLES:
            for row in doc[table]:
                cols = ", ".join(row)
                db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    db.close()
    return db_path


def captured(db_path: Path) -> Path:
    return load(json.loads((Path(__file__).parent / "fixtures" / "report_store.json").read_text()), db_path)


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(dump(Path(sys.argv[1])), indent=1) + "\n")
