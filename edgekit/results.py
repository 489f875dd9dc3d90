"""The SQLite results store (WAL mode). Every measurement ever taken is kept, failures included.

Rows carry the figures selection and reports query, plus the agent's whole document as JSON so
nothing the device said is lost. The store owns its SQL: other modules read and write through the
methods here and get records back, so the schema can change behind one file. `PRAGMA user_version`
says which of MIGRATIONS a store has had; opening it applies the rest, and a store from a newer
edgekit is refused rather than half understood.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from . import __version__, documents
from .errors import DeviceError, StoreError
from .records import Decision, Deployment, Measurement, Run, Variant

# Version 1: the schema edgekit 0.1 wrote before stores carried a version (user_version 0). Every
# statement is IF NOT EXISTS, so such a store, or one from before `run_variants` and
# `run_profiles` existed, takes version 1 in place without losing a row.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    command TEXT NOT NULL,
    model TEXT,
    profile TEXT,
    edgekit_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    recipe TEXT NOT NULL,
    sha256 TEXT,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS probes (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (run_id, target)
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    variant_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    settings_key TEXT NOT NULL,
    status TEXT NOT NULL,
    error_kind TEXT,
    error_message TEXT,
    p50_ms REAL, p90_ms REAL, p99_ms REAL, mean_ms REAL, cv REAL,
    peak_rss_mb REAL,
    document TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_lookup ON measurements (target, sha256, settings_key, status);
CREATE TABLE IF NOT EXISTS run_variants (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    variant_id TEXT NOT NULL,
    measurement_id INTEGER REFERENCES measurements(id),
    PRIMARY KEY (run_id, target, variant_id)
);
CREATE TABLE IF NOT EXISTS run_profiles (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id),
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id),
    target TEXT NOT NULL,
    model TEXT NOT NULL,
    variant_id TEXT,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    message TEXT,
    created TEXT NOT NULL
);
"""

# Version 2: what `select` decided about each variant when the run made the decision, so a report
# shows that decision even after the selection rules change (older runs are selected again).
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS decisions (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    variant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    objective TEXT NOT NULL,
    objective_value REAL,
    figures TEXT NOT NULL,
    PRIMARY KEY (run_id, target, variant_id)
);
"""

# MIGRATIONS[i] takes a store from version i to i + 1; append, never edit a released entry.
MIGRATIONS: tuple[str, ...] = (SCHEMA_V1, SCHEMA_V2)
VERSION = len(MIGRATIONS)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def store_error(path: Path | None, exc: BaseException) -> StoreError:
    """What a failing SQLite store means for the user, as one line naming the file and the fix."""
    where = f"the results store {path}" if path is not None else "the results store"
    text = " ".join(str(exc).split()) or type(exc).__name__
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        fix = (f"move it aside (mv {path} {path}.bad) and run again: a new store is made; or pass --db FILE"
               if path is not None else "move the store aside and run again, or pass --db FILE")
        return StoreError(f"{where} is damaged ({text}). Fix: {fix}")
    if "locked" in low or "busy" in low:
        return StoreError(f"{where} is locked by another process ({text}). Fix: wait for the other edgekit run "
                          f"to finish and run again, or pass --db FILE")
    if "readonly" in low or "read-only" in low or "unable to open" in low or "permission" in low:
        return StoreError(f"cannot write {where} ({text}). Fix: make the file and its folder writable, or pass "
                          f"--db / --home to a writable place")
    return StoreError(f"{where} failed ({text}). Fix: check it is an edgekit results store, or pass --db FILE")


class ResultsStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self.close()
            raise store_error(path, exc) from None
        except StoreError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise StoreError(f"cannot create the results store {path} ({exc.strerror}). Fix: pass --db / --home "
                             f"to a writable place") from None

    def _version(self) -> int:
        """The store's schema version; one from a newer edgekit is refused before anything is read."""
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > VERSION:
            raise StoreError(f"the results store {self.path} has schema version {version}, written by a newer "
                             f"edgekit than this one ({__version__}, which reads up to version {VERSION}). Fix: "
                             f"upgrade edgekit (pip install -U edgekit), or pass --db FILE for a new store")
        return version

    def _migrate(self) -> None:
        """Bring the store to VERSION. A store already there is only read (a report may open a
        read-only file); the steps run in one write transaction, so two edgekit processes opening
        a new store at once apply each step once and a failed step leaves the store as it was."""
        if self._version() == VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for script in MIGRATIONS[self._version():]:  # read again under the lock: another may have migrated
                for statement in filter(str.strip, script.split(";")):
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {VERSION}")
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

    def check_writable(self, wait_s: float = 5.0) -> None:
        """Take and drop the write lock: a read-only, locked or damaged store fails here, before any
        work whose results it would have to keep. Other runs hold it for milliseconds at a time."""
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("SELECT COUNT(*) FROM runs").fetchone()
            self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, command: str, model: str | None, profile: str | None) -> int:
        with self.db:
            cur = self.db.execute("INSERT INTO runs (started, command, model, profile, edgekit_version) "
                                  "VALUES (?, ?, ?, ?, ?)", (_now(), command, model, profile, __version__))
        return int(cur.lastrowid)

    def save_variant(self, variant: Variant) -> None:
        doc = {**variant.to_dict(), "path": ""}
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO variants (id, model, recipe, sha256, document) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (variant.id, variant.model, variant.recipe, variant.sha256, json.dumps(doc)))

    def save_probe(self, run_id: int, target: str, probe: dict[str, Any]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO probes (run_id, target, document) VALUES (?, ?, ?)",
                            (run_id, target, json.dumps(probe)))

    def save_measurement(self, run_id: int, m: Measurement) -> int:
        """Committed at once: a crash later in the run keeps what was measured. Returns the row id."""
        with self.db:
            cur = self.db.execute(
                "INSERT INTO measurements (run_id, target, variant_id, sha256, settings_key, status, error_kind, "
                "error_message, p50_ms, p90_ms, p99_ms, mean_ms, cv, peak_rss_mb, document, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, m.target, m.variant_id, m.sha256, m.settings_key, m.status, m.error_kind, m.error_message,
                 m.stats.get("p50_ms"), m.stats.get("p90_ms"), m.stats.get("p99_ms"), m.stats.get("mean_ms"),
                 m.stats.get("cv"), m.memory.get("peak_rss_mb"), json.dumps(m.document), _now()))
        m.store_id = int(cur.lastrowid)
        return m.store_id

    def save_profile(self, run_id: int, profile: dict[str, Any]) -> None:
        """The profile a run used, so reports select later exactly as the run did."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO run_profiles (run_id, document) VALUES (?, ?)",
                            (run_id, json.dumps(profile)))

    def link_variant(self, run_id: int, target: str, variant_id: str, measurement_id: int | None) -> None:
        """Which variants a run considered on a target, and the measurement it used (fresh or reused)."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO run_variants (run_id, target, variant_id, measurement_id) "
                            "VALUES (?, ?, ?, ?)", (run_id, target, variant_id, measurement_id))

    def save_decisions(self, run_id: int, target: str, decisions: list[Decision]) -> None:
        """What `select` decided on `target` in this run, one row per variant, replacing any earlier
        record of the same run and target (in one transaction: a reader sees one whole decision)."""
        with self.db:
            self.db.execute("DELETE FROM decisions WHERE run_id=? AND target=?", (run_id, target))
            self.db.executemany(
                "INSERT INTO decisions (run_id, target, variant_id, status, reason, objective, objective_value, "
                "figures) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, target, d.variant_id, d.status, d.reason, d.objective, d.objective_value,
                  json.dumps(d.figures)) for d in decisions])

    def comparable_run(self, target: str, sha256s: list[str], settings_key: str,
                       parity_data: dict[str, Any] | None, before_run: int | None = None
                       ) -> tuple[int, dict[str, Measurement]] | None:
        """The newest run on `target` (before `before_run`) that measured every artifact in `sha256s`
        successfully with these settings and parity data: (its id, {sha256: measurement}), or None.

        All or nothing: measurements from different runs were taken under different conditions,
        so a ranking never mixes them.
        """
        wanted = set(sha256s)
        if not wanted:
            return None
        marks = ", ".join("?" * len(wanted))
        rows = self.db.execute(
            f"SELECT * FROM measurements WHERE target=? AND settings_key=? AND status='ok' AND sha256 IN ({marks})"
            + (" AND run_id<?" if before_run is not None else "") + " ORDER BY run_id DESC, id DESC",
            (target, settings_key, *sorted(wanted), *([before_run] if before_run is not None else []))).fetchall()
        by_run: dict[int, dict[str, Measurement]] = {}
        for row in rows:
            found = by_run.setdefault(row["run_id"], {})
            if row["sha256"] not in found:  # the newest of that run
                found[row["sha256"]] = _measurement(row)
        by_run = {run_id: found for run_id, found in by_run.items()
                  if all(m.status == "ok" for m in found.values())}  # a row that no longer checks out is not reused
        for run_id in sorted(by_run, reverse=True):
            found = by_run[run_id]
            if set(found) == wanted and all(m.document.get("parity_data") == parity_data for m in found.values()):
                return run_id, found
        return None

    def measurements(self, run_id: int) -> list[Measurement]:
        rows = self.db.execute("SELECT * FROM measurements WHERE run_id=? ORDER BY id", (run_id,))
        return [_measurement(r) for r in rows]

    def record_deployment(self, run_id: int | None, target: str, model: str, variant_id: str | None,
                          action: str, ok: bool, message: str = "") -> None:
        with self.db:
            self.db.execute("INSERT INTO deployments (run_id, target, model, variant_id, action, ok, message, created) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (run_id, target, model, variant_id, action, int(ok), message, _now()))

    def start_rollback(self, target: str, model: str, current: str | None, previous: str | None) -> int:
        """The intent, committed before the device switches: `pending: CURRENT -> PREVIOUS`."""
        with self.db:
            cur = self.db.execute("INSERT INTO deployments (run_id, target, model, variant_id, action, ok, message, "
                                  "created) VALUES (NULL, ?, ?, ?, 'rollback', 0, ?, ?)",
                                  (target, model, previous, f"pending: {current} -> {previous}", _now()))
        return int(cur.lastrowid)

    def pending_rollback(self, target: str, model: str) -> sqlite3.Row | None:
        """The newest rollback of `model` on `target` whose outcome was never recorded."""
        return self.db.execute("SELECT * FROM deployments WHERE target=? AND model=? AND action='rollback' "
                               "AND message LIKE 'pending: %' ORDER BY id DESC LIMIT 1", (target, model)).fetchone()

    def finish_deployment(self, row_id: int, ok: bool, message: str) -> None:
        with self.db:
            self.db.execute("UPDATE deployments SET ok=?, message=? WHERE id=?", (int(ok), message, row_id))

    # ------------------------------------------------------------------ reads, for reports

    def run(self, run_id: int) -> Run | None:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return Run(**{k: row[k] for k in row.keys()}) if row is not None else None

    def targets(self) -> list[str]:
        """Every target any run probed, by name."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT target FROM probes ORDER BY target")]

    def targets_of(self, run_id: int) -> list[str]:
        """The targets a run probed (so measured on, or tried to), by name."""
        return [r[0] for r in self.db.execute("SELECT target FROM probes WHERE run_id=? ORDER BY target", (run_id,))]

    def latest_run(self, target: str, model: str | None = None, before: int | None = None) -> int | None:
        """The newest run that probed `target` (optionally: of `model`, older than run `before`)."""
        sql = ("SELECT p.run_id FROM probes p JOIN runs r ON r.id = p.run_id WHERE p.target=?"
               + (" AND r.model=?" if model else "") + (" AND p.run_id<?" if before else "")
               + " ORDER BY p.run_id DESC LIMIT 1")
        args: list[Any] = [target] + ([model] if model else []) + ([before] if before else [])
        row = self.db.execute(sql, args).fetchone()
        return int(row[0]) if row is not None else None

    def probe(self, run_id: int, target: str) -> dict[str, Any] | None:
        """The agent's probe document of `target` in that run."""
        row = self.db.execute("SELECT document FROM probes WHERE run_id=? AND target=?", (run_id, target)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def run_profile(self, run_id: int) -> dict[str, Any] | None:
        """The profile the run recorded (`save_profile`), or None for runs that recorded none."""
        row = self.db.execute("SELECT document FROM run_profiles WHERE run_id=?", (run_id,)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def run_links(self, run_id: int, target: str) -> list[tuple[str, int | None]]:
        """(variant id, measurement id or None) for each variant the run linked on `target`, in the
        order it linked them; empty when it linked none (it stopped while measuring, or predates links)."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT variant_id, measurement_id FROM run_variants WHERE run_id=? AND target=? ORDER BY rowid",
            (run_id, target))]

    def run_measured(self, run_id: int, target: str) -> list[tuple[str, int]]:
        """(variant id, measurement id) of every measurement the run itself took on `target`, in order."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT variant_id, id FROM measurements WHERE run_id=? AND target=? ORDER BY id", (run_id, target))]

    def decisions(self, run_id: int, target: str) -> list[Decision]:
        """The decisions the run recorded on `target`, in the order it made them; empty for runs that
        recorded none (older edgekit, or stopped before deciding)."""
        rows = self.db.execute("SELECT * FROM decisions WHERE run_id=? AND target=? ORDER BY rowid", (run_id, target))
        return [Decision(r["variant_id"], r["status"], r["reason"], r["objective"], r["objective_value"],
                         json.loads(r["figures"])) for r in rows]

    def variant(self, variant_id: str) -> Variant | None:
        row = self.db.execute("SELECT document FROM variants WHERE id=?", (variant_id,)).fetchone()
        return Variant.from_dict(json.loads(row[0])) if row is not None else None

    def measurement(self, measurement_id: int) -> Measurement | None:
        """One stored measurement, with the run that took it and when (`run_id`, `created`)."""
        row = self.db.execute("SELECT * FROM measurements WHERE id=?", (measurement_id,)).fetchone()
        return _measurement(row) if row is not None else None

    def deployments(self, run_id: int, target: str, action: str = "install") -> list[Deployment]:
        """What the run did on `target` (installs by default), oldest first."""
        rows = self.db.execute("SELECT * FROM deployments WHERE run_id=? AND target=? AND action=? ORDER BY id",
                               (run_id, target, action))
        return [Deployment(**{**{k: r[k] for k in r.keys()}, "ok": bool(r["ok"]), "message": r["message"] or ""})
                for r in rows]

    def rows(self, sql: str, *args: Any) -> Iterator[sqlite3.Row]:
        """Raw rows, for tests and one-off inspection; edgekit's own modules use the methods above."""
        return iter(self.db.execute(sql, args).fetchall())


def check_store(path: Path) -> None:
    """What deploy/profile/rollback do before their work: an existing store is opened and its write
    lock taken and dropped; a missing one is not created yet (bad input found later must leave
    nothing behind), only the folder it would go in is checked."""
    if not path.exists():
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create the results store {path}: {folder} is not a writable folder. Fix: "
                             f"pass --db / --home to a writable place")
        return
    with ResultsStore(path) as store:
        store.check_writable()


def _measurement(row: sqlite3.Row) -> Measurement:
    """The row as a Measurement, its document checked again as when it came from the device: a
    row an older edgekit stored unchecked (a string where a figure belongs, -inf) comes back as a
    failed measurement saying why, so every view skips it with that note instead of crashing."""
    try:
        doc = json.loads(row["document"])
        if row["status"] == "ok":
            documents.stored(doc, row["target"])
        elif not isinstance(doc, dict):
            raise ValueError(f"the document is {type(doc).__name__}, not an object")
    except (ValueError, RecursionError, DeviceError) as exc:
        reason = str(exc).split(": the device's answer")[0].removeprefix(f"target {row['target']}: ")
        reason = reason.removeprefix("stored.")
        return Measurement(target=row["target"], variant_id=row["variant_id"], sha256=row["sha256"], status="failed",
                           error_kind="bad_document",
                           error_message=f"stored measurement {row['id']} is left out: {reason[:200]}. Fix: measure "
                                         f"again (edgekit profile --target {row['target']})",
                           settings_key=row["settings_key"], document={}, store_id=row["id"], run_id=row["run_id"],
                           created=row["created"])
    return Measurement(target=row["target"], variant_id=row["variant_id"], sha256=row["sha256"],
                       status=row["status"], stats=doc.get("latency", {}), memory=doc.get("memory", {}),
                       cold=doc.get("cold", {}), error_kind=row["error_kind"], error_message=row["error_message"],
                       settings_key=row["settings_key"], document=doc, store_id=row["id"], run_id=row["run_id"],
                       created=row["created"])
