"""Generated input at every boundary where edgekit reads what someone else wrote: the agent's
command line, the agent's document writer, the host's check of a device's documents, and the
TOML loaders. Thousands of cases each (a fixed, derandomised set, so CI is repeatable); the one
property is that nothing ends in a traceback: a result, or the documented error.

Counts per property are the `max_examples` below (FUZZ_EXAMPLES scales them).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit import documents
from edgekit.agent import cli as agent_cli
from edgekit.agent.protocol import KINDS, render
from edgekit.errors import DeviceError, EdgekitError

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))


def fuzz(n: int):
    return settings(max_examples=max(10, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------- the agent's command line

PARSER = agent_cli._parser()
SUBCOMMANDS = PARSER._subparsers._group_actions[0].choices  # argparse's own table of commands
# lock and session hold the device lock until stdin closes, within exits the process, probe reads
# the whole machine (tests/test_agent.py runs it): everything else is generated here.
FUZZED = sorted(set(SUBCOMMANDS) - {"lock", "session", "within", "probe"})
OPTIONS = {name: sorted(o for a in sub._actions for o in a.option_strings if o.startswith("--"))
           for name, sub in SUBCOMMANDS.items()}
# Values stay relative names: the test runs in a fresh folder with HOME there, so whatever a
# command does with a path, it does inside that folder.
VALUES = st.one_of(
    st.from_regex(r"[A-Za-z0-9._-]{0,12}", fullmatch=True).filter(lambda v: ".." not in v),
    st.sampled_from(["0", "-1", "1e309", "nan", "inf", "3.5", "onnxruntime", "tflite", "torch", "auto", "off",
                     "cpu", "", "-", "--", "=", "a b", "\x00", "ünïcode", "[/x]", "\x1b[31m"]),
    st.integers(-10**12, 10**12).map(str),
)


@st.composite
def agent_argv(draw):
    command = draw(st.sampled_from(FUZZED))
    argv = [command]
    for _ in range(draw(st.integers(0, 8))):
        option = draw(st.sampled_from(OPTIONS[command] + ["--nope", "-x"]))
        if draw(st.booleans()):
            argv += [option, draw(VALUES)]
        elif draw(st.booleans()):
            argv.append(f"{option}={draw(VALUES)}")
        else:
            argv.append(option)
    if draw(st.booleans()):
        argv.append(draw(VALUES))
    return argv


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_agent_command_lines_get_a_document_or_a_documented_error(sandbox):
    seen = {"ok": 0, "error": 0}

    @fuzz(2000)
    @given(argv=agent_argv())
    def check(argv):
        code, doc = agent_cli.answer(argv)
        assert doc is not None, argv
        line = render(doc)
        assert line.endswith("\n") and "\n" not in line[:-1], argv
        parsed = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line!r}"))
        if "error" in parsed:
            assert code == 3 and parsed["error"]["kind"] in KINDS and parsed["error"]["kind"] != "internal", \
                (argv, parsed)
            seen["error"] += 1
        else:
            assert code == 0 and parsed["schema"] == 1, argv
            seen["ok"] += 1

    check()
    print(f"agent argv: {seen['ok']} answered, {seen['error']} documented errors, 0 tracebacks")
    assert seen["error"] > seen["ok"] > 0  # mostly nonsense, but some commands do run


# --------------------------------------------------------------------------- the agent's document writer

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)


@fuzz(1000)
@given(doc=st.dictionaries(st.text(max_size=10), JSONISH, max_size=6))
def test_every_document_is_one_line_of_strict_json(doc):
    line = render(doc)
    assert line.count("\n") == 1 and line.endswith("\n")
    back = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert back["schema"] == doc.get("schema", 1)
    assert set(back) == set(doc) | {"schema"}


# --------------------------------------------------------------------------- the host's check of documents

@pytest.fixture(scope="module")
def real_bench() -> dict:
    """A document of the shape the real agent sends (tests/test_documents.py checks real ones)."""
    samples = [1.0 + 0.01 * i for i in range(50)]
    return {"schema": 1, "command": "bench", "runtime": {"name": "onnxruntime", "version": "1.20"},
            "artifact": {"path": "a.onnx", "sha256": "0" * 64},
            "settings": {"warmup_s": 0.5, "min_runs": 50},
            "latency": {"n": 50, "p50_ms": 1.25, "p90_ms": 1.45, "p99_ms": 1.49, "mean_ms": 1.25, "std_ms": 0.14,
                        "cv": 0.11, "min_ms": 1.0, "max_ms": 1.49, "ci95_median_ms": [1.2, 1.3]},
            "samples_ms": samples, "memory": {"peak_rss_mb": 40.5}, "cold": {"load_ms": 3.0},
            "power": {"available": False, "reason": "no sensor"}, "warnings": []}


def paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield from paths(v, prefix + (i,))


def accepted_figures_are_finite(doc: dict) -> None:
    for section in ("latency", "memory", "cold"):
        for key, value in (doc.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert math.isfinite(value) and value >= 0, (section, key, value)


def test_any_change_to_a_bench_document_is_accepted_checked_or_refused_as_bad_document(real_bench):
    assert documents.validate("bench", copy.deepcopy(real_bench), "t") is not None
    all_paths = [p for p in paths(real_bench) if p]
    outcome = {"accepted": 0, "refused": 0}

    @fuzz(3000)
    @given(where=st.sampled_from(all_paths), value=JSONISH, drop=st.booleans())
    def check(where, value, drop):
        doc = copy.deepcopy(real_bench)
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        if drop and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = value
        try:
            documents.validate("bench", doc, "t")
        except DeviceError as exc:
            assert exc.kind == "bad_document" and "\n" not in str(exc)
            outcome["refused"] += 1
        else:
            accepted_figures_are_finite(doc)
            outcome["accepted"] += 1

    check()
    print(f"bench documents: {outcome['accepted']} accepted, {outcome['refused']} refused, 0 tracebacks")
    assert outcome["refused"] > outcome["accepted"] > 0


@fuzz(2000)
@given(command=st.sampled_from(sorted(documents.CHECKS)), doc=JSONISH)
def test_any_json_value_as_any_document_is_accepted_or_refused(command, doc):
    if isinstance(doc, dict) and doc and not doc.get("schema"):
        doc["schema"] = 1
    try:
        documents.validate(command, doc, "t")
    except DeviceError as exc:
        assert exc.kind == "bad_document"


# --------------------------------------------------------------------------- TOML loaders

KEYS = {
    "profile": {"build": ["recipes"], "bench": ["warmup_s", "min_runs", "min_s", "max_s", "max_runs", "rounds",
                                                "parity_samples", "power", "cooldown_c", "rate_hz", "threads"],
                "select": ["objective", "constraints"], "techniques": ["epochs", "lr", "ignore", "augment"]},
    "target": {"": ["transport", "host", "user", "port", "python", "workdir", "arch", "runtimes", "power",
                    "sensor_root", "connect_timeout", "notes", "dype"]},
    "model": {"model": ["name", "path", "factory", "inputs", "task", "batch_axis", "allow_pickle"],
              "data": ["calibration", "evaluation", "training", "metric"]},
}
SCALARS = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["onnx:fp32", "onnx:int8-static", "p90_ms", "ssh", "local", "~/x", "~bob/x",
                                     "nope:fp99", "x:1x64", "", "[/x]", "onnxruntime", "rapl"]),
                    st.text(max_size=12))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for these characters
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


VALUE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["max_accuracy_drop", "max_p90_ms", "min_cosine", "x", "name", "shape"]), inner, max_size=3),
    max_leaves=6)


# A valid file of each kind, which the generator then mutates: a few keys set to generated values,
# removed, or unknown ones added (so both loads and refusals are exercised, not only typos).
GOOD = {
    "profile": {"build": {"recipes": ["onnx:fp32"]}, "bench": {"warmup_s": 0.1, "min_runs": 10, "max_s": 5.0},
                "select": {"objective": "p90_ms", "constraints": {"max_accuracy_drop": 0.01}}},
    "target": {"": {"transport": "local", "workdir": "~/.edgekit"}},
    "model": {"model": {"name": "m", "factory": "pkg.mod:build",
                        "inputs": [{"name": "x", "shape": [1, 8], "dtype": "float32"}]}},
}


@st.composite
def toml_file(draw, kind: str):
    doc = copy.deepcopy(GOOD[kind])
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.sampled_from(sorted(KEYS[kind])))
        section = doc.setdefault(table, {})
        key = draw(st.sampled_from(KEYS[kind][table] + ["unknown_key"]))
        if key in section and draw(st.integers(0, 3)) == 0:
            del section[key]
        else:
            section[key] = draw(VALUE)
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.pop("", {}).items()]
    for table, section in doc.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in section.items()]
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.sampled_from(["= broken", "[[x]", "key = ", "a = 1\na = 2"])))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_generated_toml_files_load_or_fail_naming_the_file(kind, sandbox):
    from edgekit.config import load_model_spec, load_profile, load_target

    (sandbox / "targets").mkdir()
    outcome = {"loaded": 0, "refused": 0}

    @fuzz(700)
    @given(text=toml_file(kind))
    def check(text):
        path = sandbox / ("targets/fz.toml" if kind == "target" else f"{kind}.toml")
        path.write_text(text)
        try:
            {"profile": lambda: load_profile(str(path)), "target": lambda: load_target("fz"),
             "model": lambda: load_model_spec(path)}[kind]()
        except EdgekitError as exc:
            assert exc.exit_code == 2 and path.name in str(exc), str(exc)
            assert "\n" not in str(exc).strip() and re.search(r"Fix: ", str(exc)), str(exc)
            outcome["refused"] += 1
        else:
            outcome["loaded"] += 1

    check()
    print(f"{kind} TOML: {outcome['loaded']} loaded, {outcome['refused']} refused, 0 tracebacks")
    assert outcome["refused"] > 0 and outcome["loaded"] > 0
