"""The host's check of every document an agent sends, before anything uses or stores it.

A device is a remote computer the host does not control: a broken runtime, an old agent or a
hostile board can print anything. The figures a document carries choose what gets installed
and are kept in the results store, so a negative, infinite or non-numeric latency must stop
here, named by its field, instead of winning a selection or crashing a report later. What is
checked is what the host reads; the rest of a document is kept as the device said it, only
bounded in size and free of non-finite numbers (which are not JSON, RFC 8259 section 6).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .errors import DeviceError

SCHEMA = 1
MAX_STDOUT_BYTES = 16 * 2**20  # refused before parsing: a 20000-sample bench document is about 0.5 MB
MAX_DEPTH = 32
MAX_STRING = 16384  # a path, a warning, an error message
MAX_LIST = 10000  # warnings, runtimes, inputs, ...: anything but the samples
MAX_SAMPLES = 1_000_000  # the agent's own --max-runs default
SAMPLE_SLACK = 1  # the measured loop stops once it has max_runs samples


def _fail(where: str, problem: str) -> DeviceError:
    return DeviceError(f"{where}: {problem}: the device's answer is not usable, nothing from it was kept. "
                       f"Fix: run again (the agent is pushed afresh); if it persists, the agent or the runtime "
                       f"on the device is broken or not edgekit's", kind="bad_document")


def unusable(target: str, problem: str) -> DeviceError:
    """The bad_document error for an answer that cannot even be read as one document."""
    return _fail(f"target {target}", problem)


class _Checker:
    """Walks one document; `path` names fields as `bench.latency.p90_ms`."""

    def __init__(self, command: str, target: str) -> None:
        self.command = command
        self.where = f"target {target}"

    def fail(self, path: str, problem: str) -> DeviceError:
        return _fail(self.where, f"{_printable(path)} {problem}")

    # ------------------------------------------------------------------ the whole tree

    def tree(self, value: Any, path: str, depth: int = 0, long_list: str | None = None) -> None:
        """Every number finite, every string and list bounded, nesting bounded."""
        if depth > MAX_DEPTH:
            raise self.fail(path, f"is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail(path, f"is {value}")
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                raise self.fail(path, f"is a string of {len(value)} characters (at most {MAX_STRING})")
        elif isinstance(value, list):
            if len(value) > MAX_LIST and path != long_list:
                raise self.fail(path, f"has {len(value)} items (at most {MAX_LIST})")
            for i, item in enumerate(value):
                if isinstance(item, (dict, list, str)) or (isinstance(item, float) and not math.isfinite(item)):
                    self.tree(item, f"{path}[{i}]", depth + 1, long_list)
        elif isinstance(value, dict):
            if len(value) > MAX_LIST:
                raise self.fail(path, f"has {len(value)} keys (at most {MAX_LIST})")
            for key, item in value.items():
                if len(key) > MAX_STRING:
                    raise self.fail(path, f"has a key of {len(key)} characters")
                self.tree(item, f"{path}.{key}", depth + 1, long_list)

    # ------------------------------------------------------------------ typed fields

    def section(self, doc: dict, key: str, path: str, required: bool = True) -> dict:
        value = doc.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"{path}.{key}", f"is {_shown(value)}, not an object")
        return value

    def figure(self, doc: dict, key: str, path: str, required: bool = True, signed: bool = False) -> None:
        """A timing, memory, power or energy figure: a finite number, not negative unless `signed`."""
        value = doc.get(key)
        if value is None and not required:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{path}.{key}", f"is {_shown(value)}, not a number")
        if not math.isfinite(value) or (value < 0 and not signed):
            raise self.fail(f"{path}.{key}", f"is {value}, not a finite {'number' if signed else 'figure >= 0'}")

    def integer(self, doc: dict, key: str, path: str, minimum: int = 0, required: bool = True) -> None:
        value = doc.get(key)
        if value is None and not required:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{path}.{key}", f"is {_shown(value)}, not an integer >= {minimum}")

    def text(self, doc: dict, key: str, path: str, required: bool = False) -> None:
        value = doc.get(key)
        if value is None and not required:
            return
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", f"is {_shown(value)}, not a string")

    def flag(self, doc: dict, key: str, path: str, required: bool = False) -> None:
        value = doc.get(key)
        if value is None and not required:
            return
        if not isinstance(value, bool):
            raise self.fail(f"{path}.{key}", f"is {_shown(value)}, not true or false")

    def strings(self, doc: dict, key: str, path: str) -> None:
        value = doc.get(key)
        if value is None:
            return
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise self.fail(f"{path}.{key}", f"is {_shown(value)}, not a list of strings")


def _printable(path: str) -> str:
    """A field path holds keys the device chose: a newline or an escape sequence in one must
    neither split the one-line message nor reach the terminal."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in path)
    return text if len(text) <= 200 else text[:197] + "..."


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- per command

LATENCY = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "cv", "min_ms", "max_ms")
ORDERED = ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
POWER = ("avg_w", "peak_w", "idle_w", "energy_j", "window_s", "energy_per_inference_mj", "interval_s")


def _bench(c: _Checker, doc: dict, max_samples: int) -> None:
    p = "bench"
    lat = c.section(doc, "latency", p)
    c.integer(lat, "n", f"{p}.latency", minimum=1)
    for key in LATENCY:
        c.figure(lat, key, f"{p}.latency", required=key != "p95_ms")
    ci = lat.get("ci95_median_ms")
    if ci is not None:
        if not isinstance(ci, list) or len(ci) != 2:
            raise c.fail(f"{p}.latency.ci95_median_ms", f"is {_shown(ci)}, not two bounds")
        for i, bound in enumerate(ci):
            _bound(c, bound, f"{p}.latency.ci95_median_ms[{i}]")
    present = [(k, lat[k]) for k in ORDERED if lat.get(k) is not None]
    for (a, x), (b, y) in zip(present, present[1:]):
        if x > y * (1 + 1e-9) + 1e-9:
            raise c.fail(f"{p}.latency", f"has {a} {x:g} > {b} {y:g}: percentiles out of order")
    samples = doc.get("samples_ms")
    if samples is not None:
        if not isinstance(samples, list):
            raise c.fail(f"{p}.samples_ms", f"is {_shown(samples)}, not a list")
        if len(samples) > max_samples + SAMPLE_SLACK:
            raise c.fail(f"{p}.samples_ms", f"has {len(samples)} samples, more than the {max_samples} runs asked for")
        for i, x in enumerate(samples):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
                raise c.fail(f"{p}.samples_ms[{i}]", f"is {_shown(x)}, not a finite figure >= 0")
        if len(samples) != lat["n"]:
            raise c.fail(f"{p}.samples_ms", f"has {len(samples)} samples but latency.n is {lat['n']}")
    mem = c.section(doc, "memory", p)
    for key in mem:
        c.figure(mem, key, f"{p}.memory", required=False)
    cold = c.section(doc, "cold", p, required=False)
    for key in cold:
        c.figure(cold, key, f"{p}.cold", required=False)
    power = c.section(doc, "power", p, required=False)
    c.flag(power, "available", f"{p}.power")
    c.text(power, "reason", f"{p}.power")
    for key in POWER:
        c.figure(power, key, f"{p}.power", required=False)
    c.figure(power, "energy_above_idle_per_inference_mj", f"{p}.power", required=False, signed=True)
    c.integer(power, "samples", f"{p}.power", required=False)
    rails = c.section(power, "rails_avg_w", f"{p}.power", required=False)
    for key in rails:
        c.figure(rails, key, f"{p}.power.rails_avg_w", required=False)
    window = c.section(doc, "window", p, required=False)
    c.integer(window, "runs", f"{p}.window", required=False)
    c.figure(window, "seconds", f"{p}.window", required=False)
    load = c.section(doc, "load", p, required=False)  # CPU other processes used while measuring
    c.figure(load, "other_cpu", f"{p}.load", required=False)
    if isinstance(load.get("other_cpu"), (int, float)) and load["other_cpu"] > 1:
        raise c.fail(f"{p}.load.other_cpu", f"is {load['other_cpu']}, not a fraction of the CPU (0..1)")
    c.integer(load, "cores", f"{p}.load", required=False)
    c.text(load, "reason", f"{p}.load")
    rate = c.section(doc, "rate", p, required=False)
    for key in ("rate_hz", "period_ms", "missed_fraction"):
        c.figure(rate, key, f"{p}.rate", required=False)
    _inputs(c, doc.get("inputs"), f"{p}.inputs")
    c.section(doc, "runtime", p, required=False)
    _emulation(c, doc, p)
    c.strings(doc, "warnings", p)


def _bound(c: _Checker, value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise c.fail(path, f"is {_shown(value)}, not a finite figure >= 0")


def _inputs(c: _Checker, value: Any, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise c.fail(path, f"is {_shown(value)}, not a list")
    for i, item in enumerate(value):
        here = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise c.fail(here, f"is {_shown(item)}, not an object")
        c.text(item, "name", here, required=True)
        c.text(item, "dtype", here)
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise c.fail(f"{here}.shape", f"is {_shown(shape)}, not a list of sizes")


def _emulation(c: _Checker, doc: dict, path: str) -> None:
    emu = c.section(doc, "emulation", path, required=False)
    value = emu.get("emulated")
    if value is not None and not isinstance(value, bool):
        raise c.fail(f"{path}.emulation.emulated", f"is {_shown(value)}, not true, false or null")
    c.text(emu, "program", f"{path}.emulation")


def _probe(c: _Checker, doc: dict, _: int) -> None:
    p = "probe"
    for key in ("arch", "hostname", "numpy", "governor"):
        c.text(doc, key, p)
    cpu = c.section(doc, "cpu", p, required=False)
    c.text(cpu, "model", f"{p}.cpu")
    c.strings(cpu, "isa", f"{p}.cpu")
    c.strings(cpu, "missing", f"{p}.cpu")
    cores = c.section(doc, "cores", p, required=False)
    for key in ("online", "affinity", "usable"):
        c.integer(cores, key, f"{p}.cores", required=False)
    c.figure(cores, "cgroup_quota", f"{p}.cores", required=False)
    mem = c.section(doc, "memory", p, required=False)
    for key in mem:
        c.figure(mem, key, f"{p}.memory", required=False)
    for key in ("os", "board", "python"):
        c.section(doc, key, p, required=False)
    c.text(doc.get("python") or {}, "version", f"{p}.python")
    c.text(doc.get("os") or {}, "name", f"{p}.os")
    c.text(doc.get("board") or {}, "model", f"{p}.board")
    runtimes = c.section(doc, "runtimes", p, required=False)
    for name, entry in runtimes.items():
        if not isinstance(entry, dict):
            raise c.fail(f"{p}.runtimes.{name}", f"is {_shown(entry)}, not an object")
        c.text(entry, "version", f"{p}.runtimes.{name}")
        c.text(entry, "error", f"{p}.runtimes.{name}")
        c.strings(entry, "providers", f"{p}.runtimes.{name}")
    _emulation(c, doc, p)
    c.strings(doc, "warnings", p)


def _run(c: _Checker, doc: dict, _: int) -> None:
    c.integer(doc, "batches", "run", required=True)
    c.text(doc, "outputs", "run")
    c.section(doc, "runtime", "run", required=False)
    _emulation(c, doc, "run")


def _path_doc(c: _Checker, doc: dict, _: int) -> None:
    c.text(doc, "path", c.command, required=True)
    c.flag(doc, "reused", c.command)
    c.text(doc, "sha256", c.command)


def _status(c: _Checker, doc: dict, _: int) -> None:
    p = c.command
    c.text(doc, "workdir", p, required=True)
    models = c.section(doc, "models", p)
    for name, info in models.items():
        here = f"{p}.models.{name}"
        if not isinstance(info, dict):
            raise c.fail(here, f"is {_shown(info)}, not an object")
        for key in ("current", "previous", "path"):
            c.text(info, key, here)
        c.strings(info, "installed", here)
        record = c.section(info, "deployment", here, required=False)
        c.text(record, "installed", f"{here}.deployment")
        meta = c.section(record, "meta", f"{here}.deployment", required=False)
        c.text(meta, "recipe", f"{here}.deployment.meta")


def _lock(c: _Checker, doc: dict, _: int) -> None:
    c.flag(doc, "acquired", "lock", required=True)
    c.text(doc, "holder", "lock")
    c.text(doc, "path", "lock")
    c.integer(doc, "pid", "lock", required=False)


def _remove(c: _Checker, doc: dict, _: int) -> None:
    c.integer(doc, "removed", "remove", required=True)


def _gc(c: _Checker, doc: dict, _: int) -> None:
    c.text(doc, "workdir", "gc", required=True)
    c.flag(doc, "dry_run", "gc", required=True)
    c.integer(doc, "freed_bytes", "gc", required=True)
    for side in ("removed", "kept"):
        entries = doc.get(side)
        if not isinstance(entries, list):
            raise c.fail(f"gc.{side}", f"is {_shown(entries)}, not a list")
        for i, entry in enumerate(entries):
            here = f"gc.{side}[{i}]"
            if not isinstance(entry, dict):
                raise c.fail(here, f"is {_shown(entry)}, not an object")
            c.text(entry, "path", here, required=True)
            c.text(entry, "why", here, required=True)
            c.integer(entry, "bytes", here, required=True)


def _boot(c: _Checker, doc: dict, _: int) -> None:
    c.text(doc, "found", "boot")


def _version(c: _Checker, doc: dict, _: int) -> None:
    c.text(doc, "agent", "version", required=True)
    c.text(doc, "python", "version")


CHECKS: dict[str, Callable[[_Checker, dict, int], None]] = {
    "bench": _bench, "probe": _probe, "run": _run, "install": _path_doc, "accept": _path_doc,
    "activate": _status, "rollback": _status, "status": _status, "lock": _lock, "version": _version,
    "remove": _remove, "boot": _boot, "gc": _gc,
}


def validate(command: str, doc: Any, target: str, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
    """`doc` if it is a well-formed schema-1 answer to `command` (or an agent error); a DeviceError
    of kind `bad_document` naming the first bad field otherwise."""
    c = _Checker(command, target)
    if not isinstance(doc, dict):
        raise _fail(c.where, f"the {command} answer is {_shown(doc)}, not a JSON object")
    if doc.get("schema") != SCHEMA:
        raise _fail(c.where, f"{command}.schema is {_shown(doc.get('schema'))}, expected {SCHEMA} (an agent of "
                             f"another edgekit version)")
    c.tree(doc, command, long_list=f"{command}.samples_ms")
    if "error" in doc:
        err = doc["error"]
        if not isinstance(err, dict):
            raise c.fail(f"{command}.error", f"is {_shown(err)}, not an object")
        c.text(err, "kind", f"{command}.error", required=True)
        c.text(err, "message", f"{command}.error")
        return doc
    stated = doc.get("command")
    if stated is not None and stated != command:
        raise c.fail(f"{command}.command", f"is {_shown(stated)}: the answer to another command")
    check = CHECKS.get(command)
    if check is not None:
        check(c, doc, max_samples)
    return doc


def stored(doc: Any, target: str) -> dict[str, Any]:
    """A measurement's document as read back from the results store: the device's figures the
    views read (latency, memory, cold start, power) finite numbers >= 0 as when they arrived,
    without asking for fields older edgekit versions did not keep. What the host computed and
    stored beside them (device parity, which may be NaN for outputs that were NaN) is its own
    record and is not judged here. A DeviceError of kind `bad_document` naming the first bad
    field otherwise."""
    c = _Checker("stored", target)
    if not isinstance(doc, dict):
        raise _fail(c.where, f"the stored document is {_shown(doc)}, not a JSON object")
    for name, keys in (("latency", LATENCY), ("memory", None), ("cold", None), ("power", POWER)):
        section = c.section(doc, name, "stored", required=name == "latency")  # a measurement has timings
        for key in keys if keys is not None else list(section):
            c.figure(section, key, f"stored.{name}", required=False)
    return doc


def session_reply(doc: Any, request_id: int, target: str, max_stdout: int) -> tuple[int | None, str, str, bool]:
    """A session's answer to request `request_id` as (exit code, stdout, stderr, timed out): the
    envelope only. Its stdout is the command's own document, which the caller then checks with
    `validate` exactly as in single-command mode."""
    c = _Checker("session", target)
    if not isinstance(doc, dict):
        raise _fail(c.where, f"the session answer is {_shown(doc)}, not a JSON object")
    if doc.get("schema") != SCHEMA or doc.get("command") != "session":
        raise _fail(c.where, f"the session answer has schema {_shown(doc.get('schema'))} and command "
                             f"{_shown(doc.get('command'))}, expected {SCHEMA} and 'session'")
    if doc.get("id") != request_id or isinstance(doc.get("id"), bool):
        raise c.fail("session.id", f"is {_shown(doc.get('id'))}, not the request's {request_id}")
    code, out, err, late = doc.get("exit"), doc.get("stdout"), doc.get("stderr"), doc.get("timed_out")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise c.fail("session.exit", f"is {_shown(code)}, not an integer")
    if not isinstance(out, str) or len(out) > max_stdout + 1:
        raise c.fail("session.stdout", "is not a string" if not isinstance(out, str)
                     else f"is {len(out)} characters, over the {max_stdout} a document may be")
    if not isinstance(err, str) or len(err) > MAX_STRING:
        raise c.fail("session.stderr", f"is not a string of at most {MAX_STRING} characters")
    if not isinstance(late, bool):
        raise c.fail("session.timed_out", f"is {_shown(late)}, not true or false")
    return code, out, err, late
