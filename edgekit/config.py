"""Loading the files users write (edgekit.toml, targets/*.toml, profiles/*.toml) into settings.

Every validation error names the file, the key and the fix, because the person reading it is
editing that file and should not need a traceback to find the line. It sits above compress so a
profile's recipes are checked by the same parser that builds them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from .agent.power import NAMES as POWER_NAMES
from .compress.registry import PROFILE_OPTIONS, parse_recipe  # light: no converter imports
from .errors import SpecError
from .graph import describe_onnx
from .settings import (CONSTRAINTS, DTYPES, OBJECTIVES, TASKS, TRANSPORTS,
                       BenchSettings, InputSpec, ModelSpec, Profile, SelectSettings, Target, TechniqueSettings)

MAX_ROUNDS = 100

# A model name becomes a folder on every device (deployments/<name>/) and a key in the store:
# the agent takes letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def model_name_problem(name: object) -> str | None:
    """Why `name` cannot name a model, or None when it can (re.fullmatch: no trailing newline)."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or ".." in name:
        return (f"{name!r} is not a model name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                f"or digit (it names a folder on the device)")
    return None


# --------------------------------------------------------------------------- TOML reading


def _power_choice(bench: _Table) -> str:
    value = bench.text("power", default="auto")
    if value not in ("auto", "off") + POWER_NAMES:
        raise bench.fail("power", f"{value!r} is not a sensor", f"use auto, off or one of {', '.join(POWER_NAMES)}")
    return value


class _Table:
    """Reads typed values out of one TOML table, raising SpecError that names file and key."""

    def __init__(self, data: dict[str, Any], file: str, section: str) -> None:
        self.data = data
        self.file = file
        self.section = section

    def fail(self, key: str, problem: str, fix: str) -> SpecError:
        shown = key if key and key.isprintable() and key.strip() == key else repr(key)  # one line, no escapes
        where = f"[{self.section}] {shown}" if self.section else shown
        return SpecError(f"{self.file}: {where}: {problem}. Fix: {fix}")

    def unknown_keys(self, allowed: set[str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            raise self.fail(extra[0], "unknown key", f"use one of {', '.join(sorted(allowed))}")

    def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        if key not in self.data:
            if required:
                raise self.fail(key, "missing", f'add {key} = "..."')
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}", f'write {key} = "..."')
        return value

    def number(self, key: str, default: float, minimum: float = 0.0, integer: bool = False) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < minimum:
            kind = "an integer" if integer else "a finite number"
            raise self.fail(key, f"expected {kind} >= {minimum}, got {value!r}", f"write {key} = {default}")
        return int(value) if integer else float(value)

    def str_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"expected a list of strings, got {value!r}", f'write {key} = ["..."]')
        return tuple(value)

    def table(self, key: str) -> _Table:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {value!r}", f"write [{key}] on its own line")
        section = f"{self.section}.{key}" if self.section else key
        return _Table(value, self.file, section)


def read_toml(path: Path) -> _Table:
    if not path.is_file():
        raise SpecError(f"{path}: file not found. Fix: check the path, or create it")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML ({exc}). Fix: correct the syntax at that line") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text. Fix: save the file as UTF-8") from None
    return _Table(data, str(path), "")


# --------------------------------------------------------------------------- model spec


def parse_input(text: str) -> InputSpec:
    """`NAME:1x1x8x8[:DTYPE[:AXIS]]` from a flag; SHAPE `scalar` is a scalar input."""
    parts = text.split(":")
    if len(parts) not in (2, 3, 4) or not parts[0]:
        raise SpecError(f"--input {text!r}: expected NAME:SHAPE[:DTYPE[:BATCH_AXIS]] such as input:1x3x224x224:float32 "
                        f"(SHAPE scalar for a scalar). Fix: use that form")
    if parts[1].lower() in ("scalar", "[]"):
        shape: tuple[int, ...] = ()
    else:
        try:
            shape = tuple(int(d) for d in parts[1].lower().split("x"))
        except ValueError:
            raise SpecError(f"--input {text!r}: shape {parts[1]!r} is not integers joined by 'x'. "
                            f"Fix: write e.g. 1x3x224x224, or scalar") from None
    dtype = parts[2] if len(parts) >= 3 and parts[2] else "float32"
    axis = parts[3] if len(parts) == 4 else "0"
    if not axis.isdigit():
        raise SpecError(f"--input {text!r}: batch axis {axis!r} is not a non-negative integer. Fix: write e.g. "
                        f"state:2x1x128:float32:1")
    return _check_input(InputSpec(parts[0], shape, dtype, int(axis)),
                        lambda problem, fix: SpecError(f"--input {text!r}: {problem}. Fix: {fix}"))


def _check_input(spec: InputSpec, fail) -> InputSpec:
    if any(d <= 0 for d in spec.shape):
        raise fail(f"shape {list(spec.shape)} must be positive integers ([] for a scalar)",
                   "give every dimension its size, e.g. [1, 3, 224, 224]")
    if spec.dtype not in DTYPES:
        raise fail(f"dtype {spec.dtype!r} is not supported", f"use one of {', '.join(DTYPES)}")
    if spec.shape and not 0 <= spec.batch_axis < len(spec.shape):
        raise fail(f"batch_axis {spec.batch_axis} is outside the shape {list(spec.shape)}",
                   f"use 0..{len(spec.shape) - 1}")
    if spec.values is not None:
        if spec.dtype.startswith("float"):
            raise fail("values is for integer and bool inputs", "drop values, or set an integer dtype")
        if not spec.values or not all(isinstance(v, (int, bool)) for v in spec.values):
            raise fail(f"values {list(spec.values)} must be a non-empty list of integers", "write values = [16000]")
    return spec


INPUT_KEYS = {"name", "shape", "dtype", "batch_axis", "values"}


def _input_item(model: _Table, i: int, item: Any) -> InputSpec:
    key = f"inputs[{i}]"
    example = '{ name = "input", shape = [1, 3, 224, 224], dtype = "float32" }'
    if not isinstance(item, dict):
        raise model.fail(key, f"expected a table, got {item!r}", example)
    extra = sorted(set(item) - INPUT_KEYS)
    if extra:
        raise model.fail(f"{key}.{extra[0]}", "unknown key", f"use one of {', '.join(sorted(INPUT_KEYS))}")
    name, shape, dtype = item.get("name"), item.get("shape"), item.get("dtype", "float32")
    axis, values = item.get("batch_axis", 0), item.get("values")
    if not isinstance(name, str) or not name:
        raise model.fail(f"{key}.name", "missing", 'add name = "input"')
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise model.fail(f"{key}.shape", f"expected a list of integers ([] for a scalar), got {shape!r}",
                         "write shape = [1, 3, 224, 224]")
    if not isinstance(dtype, str):
        raise model.fail(f"{key}.dtype", f"expected a string, got {dtype!r}", 'write dtype = "float32"')
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise model.fail(f"{key}.batch_axis", f"expected an integer, got {axis!r}", "write batch_axis = 1")
    if values is not None and not isinstance(values, list):
        raise model.fail(f"{key}.values", f"expected a list, got {values!r}", "write values = [16000]")
    spec = InputSpec(name, tuple(shape), dtype, axis, tuple(values) if values is not None else None)
    return _check_input(spec, lambda problem, fix: model.fail(key, problem, fix))


def graph_inputs(path: Path, fail, flags: bool = False) -> tuple[InputSpec, ...]:
    """A spec without `inputs` takes them from the ONNX graph, when every dimension is static.
    `flags`: the fix is written as --input flags instead of TOML."""
    io = describe_onnx(path)
    specs = []
    for t in io.inputs:
        dynamic = [(i, d) for i, d in enumerate(t.dims) if not isinstance(d, int)]
        if dynamic:
            i, d = dynamic[0]
            dims = [str(x) if isinstance(x, int) else x.upper() for x in t.dims]
            fix = (f"pass --input {t.name}:{'x'.join(dims)}:{t.dtype}" if flags else
                   f'add inputs = [{{ name = "{t.name}", shape = [{", ".join(dims)}], dtype = "{t.dtype}" }}]')
            raise fail(f"input {t.name!r} of {path.name} has dynamic dimension {i} ({d}), so its "
                       f"size must be declared", f"{fix} with the size you run it at (edgekit inspect {path.name} "
                       f"lists every input)")
        if t.dtype not in DTYPES:
            raise fail(f"input {t.name!r} of {path.name} has type {t.dtype}, which edgekit cannot feed",
                             f"use a model whose inputs are {', '.join(DTYPES)}")
        specs.append(InputSpec(t.name, tuple(t.dims), t.dtype))  # type: ignore[arg-type]
    return tuple(specs)


def check_against_graph(inputs: tuple[InputSpec, ...], path: Path, fail) -> None:
    """Declared ONNX inputs must name the graph's inputs and agree with its static dimensions."""
    graph = {t.name: t for t in describe_onnx(path).inputs}
    for inp in inputs:
        t = graph.get(inp.name)
        if t is None:
            raise fail(f"{path.name} has no input {inp.name!r}", f"use the graph's input names: {', '.join(graph)}")
        if len(t.dims) != len(inp.shape) or any(isinstance(g, int) and g != d for g, d in zip(t.dims, inp.shape)):
            dims = ", ".join(str(x) for x in t.dims)
            raise fail(f"input {inp.name!r} is declared {list(inp.shape)}, the graph says [{dims}]",
                       "declare the graph's fixed dimensions and a size for each named one")
    missing = sorted(set(graph) - {i.name for i in inputs})
    if missing:
        raise fail(f"{path.name} also needs input {missing[0]!r}", "declare every graph input")


def load_model_spec(path: Path) -> ModelSpec:
    doc = read_toml(path)
    doc.unknown_keys({"model", "data"})
    model = doc.table("model")
    model.unknown_keys({"name", "factory", "checkpoint", "path", "inputs", "dynamic_batch", "task", "allow_pickle"})
    dynamic_batch = model.data.get("dynamic_batch", False)
    if not isinstance(dynamic_batch, bool):
        raise model.fail("dynamic_batch", f"expected true or false, got {dynamic_batch!r}", "write dynamic_batch = true")
    allow_pickle = model.data.get("allow_pickle", False)
    if not isinstance(allow_pickle, bool):
        raise model.fail("allow_pickle", f"expected true or false, got {allow_pickle!r}", "write allow_pickle = true")
    task = model.text("task")
    if task is not None and task not in TASKS:
        raise model.fail("task", f"{task!r} is not known", f'use one of {", ".join(TASKS)}, or leave it out')
    data = doc.table("data")
    data.unknown_keys({"calibration", "evaluation", "training", "metric"})
    metric = data.text("metric")
    if metric is not None and ":" not in metric:
        raise data.fail("metric", f"{metric!r} is not module:function", 'write metric = "package.module:function"')
    base = path.parent

    factory = model.text("factory")
    model_path = model.text("path")
    if bool(factory) == bool(model_path):
        raise model.fail("factory", "exactly one of factory or path must be set",
                         'write factory = "package.module:function" or path = "model.onnx"')
    if factory and ":" not in factory:
        raise model.fail("factory", f"{factory!r} is not module:function", 'write factory = "package.module:function"')

    def rel(value: str | None) -> Path | None:
        return None if value is None else (base / value).resolve()

    def data_ref(key: str) -> str | None:
        value = data.text(key)
        if value is None or ":" in value and not value.endswith((".npz", ".npy")):
            return value  # entry point module:function
        resolved = rel(value)
        if not resolved.is_file():
            raise data.fail(key, f"file {resolved} not found", "point it at an existing .npz/.npy file or a module:function")
        return str(resolved)

    checkpoint = rel(model.text("checkpoint"))
    if checkpoint is not None and not checkpoint.is_file():
        raise model.fail("checkpoint", f"file {checkpoint} not found", "point it at an existing weights file")
    resolved_path = rel(model_path)
    if resolved_path is not None and not resolved_path.is_file():
        raise model.fail("path", f"file {resolved_path} not found", "point it at an existing .pt, .ts or .onnx file")

    raw_inputs = model.data.get("inputs")
    onnx_file = resolved_path is not None and resolved_path.suffix == ".onnx"
    if raw_inputs is None and onnx_file:
        inputs = graph_inputs(resolved_path, lambda problem, fix: model.fail("inputs", problem, fix))
    else:
        if not isinstance(raw_inputs, list) or not raw_inputs:
            raise model.fail("inputs", "missing or empty",
                             'write inputs = [{ name = "input", shape = [1, 3, 224, 224], dtype = "float32" }]')
        inputs = tuple(_input_item(model, i, item) for i, item in enumerate(raw_inputs))
        if onnx_file:
            check_against_graph(inputs, resolved_path, lambda problem, fix: model.fail("inputs", problem, fix))
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise model.fail("inputs", f"input names repeat: {names}", "give every input its own name")

    name = model.text("name", required=True)
    problem = model_name_problem(name)
    if problem:
        raise model.fail("name", problem, 'write e.g. name = "detector-v2"')
    return ModelSpec(
        name=name,
        inputs=inputs,
        factory=factory,
        checkpoint=checkpoint,
        path=resolved_path,
        calibration=data_ref("calibration"),
        evaluation=data_ref("evaluation"),
        training=data_ref("training"),
        source=str(path),
        dynamic_batch=dynamic_batch,
        task=task,
        metric=metric,
        allow_pickle=allow_pickle,
    )


# --------------------------------------------------------------------------- targets and profiles


@dataclasses.dataclass(frozen=True)
class ModelFlags:
    """The model as command-line flags give it (`--spec`, or `--factory`/`--model-path` with the rest)."""

    spec_path: Path | None = None
    factory: str | None = None
    checkpoint: Path | None = None
    model_path: Path | None = None
    inputs: tuple[str, ...] = ()
    calibration: str | None = None
    evaluation: str | None = None
    name: str | None = None
    allow_pickle: bool = False

    @property
    def default_spec(self) -> Path | None:
        """The spec file used when no model flag is given: ./edgekit.toml if present."""
        if self.factory or self.model_path or self.spec_path:
            return self.spec_path
        return Path("edgekit.toml") if Path("edgekit.toml").is_file() else None

    @property
    def uses_example(self) -> bool:
        """No model given at all: the bundled example stands in."""
        return not (self.factory or self.model_path) and self.default_spec is None


def check_name_flag(name: str | None, flag: str = "--name") -> None:
    problem = model_name_problem(name) if name is not None else None
    if problem:
        raise SpecError(f"{flag} {problem}. Fix: e.g. {flag} detector-v2")


def spec_from_flags(flags: ModelFlags) -> ModelSpec:
    """The model spec the flags describe; every problem names the flag and the fix."""
    if flags.factory or flags.model_path:
        return _spec_from_model_flags(flags)
    spec_path = flags.default_spec
    if spec_path is not None:
        spec = load_model_spec(spec_path)
    else:
        from .examples import digits

        spec = digits.spec()
    if flags.name is not None:
        check_name_flag(flags.name)
        spec = dataclasses.replace(spec, name=flags.name)
    if flags.allow_pickle and not spec.allow_pickle:
        spec = dataclasses.replace(spec, allow_pickle=True)
    return spec


def _spec_from_model_flags(flags: ModelFlags) -> ModelSpec:
    factory, model_path, checkpoint = flags.factory, flags.model_path, flags.checkpoint
    if flags.spec_path:
        raise SpecError("--spec and --factory/--model-path both given. Fix: use one or the other")
    onnx_file = model_path is not None and model_path.suffix == ".onnx" and model_path.is_file()
    if not flags.inputs and not onnx_file:
        raise SpecError("--input is required with --factory/--model-path. Fix: add --input NAME:1x3x224x224")
    for flag, path in (("--checkpoint", checkpoint), ("--model-path", model_path)):
        if path is not None and not path.is_file():
            raise SpecError(f"{flag} {path}: file not found. Fix: check the path")
    for flag, ref in (("--calibration", flags.calibration), ("--evaluation", flags.evaluation)):
        if ref and ref.endswith((".npz", ".npy")) and not Path(ref).is_file():
            raise SpecError(f"{flag} {ref}: file not found. Fix: check the path")
    default_name = (factory or "").rpartition(":")[2] or (model_path.stem if model_path else "model")

    def flag_error(problem: str, fix: str) -> SpecError:
        return SpecError(f"--model-path {model_path}: {problem}. Fix: {fix}")

    declared = tuple(parse_input(i) for i in flags.inputs)
    if onnx_file:
        if declared:
            check_against_graph(declared, model_path, flag_error)
        else:
            declared = graph_inputs(model_path, flag_error, flags=True)
    if flags.name is None and model_name_problem(default_name):
        raise SpecError(f"the model name would be {default_name!r}, taken from the "
                        f"{'factory' if factory else 'file name'}, and {model_name_problem(default_name)}. "
                        f"Fix: add --name NAME")
    check_name_flag(flags.name)
    return ModelSpec(name=flags.name or default_name, inputs=declared, factory=factory,
                     checkpoint=checkpoint.resolve() if checkpoint else None,
                     path=model_path.resolve() if model_path else None, calibration=flags.calibration,
                     evaluation=flags.evaluation, source="flags", allow_pickle=flags.allow_pickle)


def _builtin_dir(kind: str) -> Path:
    """The shipped `targets/` or `profiles/`: a package in an install, the repo folder in a checkout."""
    try:
        return Path(str(resources.files(f"edgekit.builtin.{kind}")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / kind


def search_dirs(kind: str) -> list[Path]:
    """Where NAME.toml is looked up, first match wins: the project, the user, the built-ins."""
    config = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edgekit" / kind
    dirs = [Path.cwd() / kind, config, _builtin_dir(kind)]
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def available(kind: str) -> dict[str, Path]:
    """Every NAME -> file of a kind, with the earlier search directories overriding later ones."""
    found: dict[str, Path] = {}
    for d in reversed(search_dirs(kind)):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = f
    return dict(sorted(found.items()))


def _find(kind: str, name: str, flag: str) -> Path:
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise SpecError(f"{flag} {name}: file not found. Fix: check the path")
        return path
    found = available(kind)
    if name not in found:
        names = ", ".join(found) or "none"
        raise SpecError(f"{flag} {name}: unknown {kind[:-1]}. Fix: use one of {names}, "
                        f"or add {kind}/{name}.toml")
    return found[name]


def load_target(name: str) -> Target:
    path = _find("targets", name, "--target")
    doc = read_toml(path)
    doc.unknown_keys({"host", "user", "port", "python", "workdir", "arch", "runtimes", "power",
                      "notes", "transport", "sensor_root", "connect_timeout"})
    transport = doc.text("transport", default="ssh")
    if transport not in TRANSPORTS:
        raise doc.fail("transport", f"{transport!r} is not known", f"use one of {', '.join(TRANSPORTS)}")
    host = doc.text("host")
    if transport == "ssh" and not host:
        raise doc.fail("host", "missing for an ssh target", 'add host = "an address or ~/.ssh/config alias"')
    port = doc.number("port", default=0, minimum=0, integer=True) or None
    if port is not None and port > 65535:
        raise doc.fail("port", f"{port} is not a TCP port", "use 1-65535")
    workdir = doc.text("workdir", default="~/.edgekit")
    if workdir.startswith("~") and workdir != "~" and not workdir.startswith("~/"):
        # sftp would take `~bob/x` as a folder named "~bob" under the login directory, the agent
        # as bob's home: one workdir must mean one place for every command
        raise doc.fail("workdir", f"{workdir!r}: a ~user path means different places to sftp and to the agent",
                       f"write it as an absolute path (e.g. /home/{workdir[1:].split('/')[0]}/...) or as ~/...")
    return Target(
        name=path.stem,
        transport=transport,
        host=host,
        user=doc.text("user"),
        port=port,
        python=doc.text("python"),
        workdir=workdir,
        arch=doc.text("arch"),
        runtimes=doc.str_list("runtimes"),
        power=_power_choice(doc) if "power" in doc.data else None,
        sensor_root=doc.text("sensor_root"),
        notes=doc.text("notes", default="") or "",
        source=str(path),
        connect_timeout=doc.number("connect_timeout", default=10.0, minimum=0.1),
    )


def load_profile(name: str) -> Profile:
    path = _find("profiles", name, "--profile")
    doc = read_toml(path)
    doc.unknown_keys({"build", "bench", "select", "description", "techniques"})
    build = doc.table("build")
    build.unknown_keys({"recipes"})
    recipes = build.str_list("recipes")
    if not recipes:
        raise build.fail("recipes", "missing or empty", 'write recipes = ["onnx:fp32", "onnx:int8-static"]')
    for recipe in recipes:
        try:
            parse_recipe(recipe)
        except SpecError as exc:
            raise build.fail("recipes", str(exc), "use a recipe from `edgekit recipes`") from None

    bench = doc.table("bench")
    bench.unknown_keys({f.name for f in dataclasses.fields(BenchSettings)})
    d = BenchSettings()
    settings = BenchSettings(
        warmup_s=bench.number("warmup_s", d.warmup_s),
        min_runs=bench.number("min_runs", d.min_runs, minimum=1, integer=True),
        min_s=bench.number("min_s", d.min_s),
        max_s=bench.number("max_s", d.max_s, minimum=0.1),
        threads=bench.number("threads", d.threads, integer=True),
        max_runs=bench.number("max_runs", d.max_runs, minimum=1, integer=True),
        power=_power_choice(bench),
        cooldown_c=bench.number("cooldown_c", None, minimum=0.0),
        rate_hz=bench.number("rate_hz", None, minimum=0.001),
        parity_samples=bench.number("parity_samples", d.parity_samples, minimum=0, integer=True),
        rounds=bench.number("rounds", d.rounds, minimum=1, integer=True),
    )

    if settings.rounds > MAX_ROUNDS:
        raise bench.fail("rounds", f"expected 1..{MAX_ROUNDS}, got {settings.rounds}: every round starts a fresh "
                         f"agent process per variant", f"write rounds = {d.rounds}")

    select = doc.table("select")
    select.unknown_keys({"objective", "constraints"})
    objective = select.text("objective", default="p90_ms")
    if objective not in OBJECTIVES:
        raise select.fail("objective", f"{objective!r} is not known", f"use one of {', '.join(OBJECTIVES)}")
    limits = select.table("constraints")
    limits.unknown_keys(set(CONSTRAINTS))
    constraints = {key: limits.number(key, 0.0) for key in CONSTRAINTS if key in limits.data}
    for key in ("min_cosine", "min_top1_agreement"):
        if constraints.get(key, 0.0) > 1:
            raise limits.fail(key, f"expected 0..1, got {constraints[key]!r}", f"write {key} = 0.99")
    return Profile(
        name=path.stem,
        recipes=recipes,
        bench=settings,
        select=SelectSettings(objective=objective, constraints=constraints),
        source=str(path),
        techniques=_technique_settings(doc.table("techniques")),
    )


def _technique_settings(table: _Table) -> TechniqueSettings:
    """The profile's `[techniques]` table, every key checked against its declaration."""
    table.unknown_keys(set(PROFILE_OPTIONS))
    values = {}
    for key, option in PROFILE_OPTIONS.items():
        if key in table.data:
            try:
                values[key] = option.check(table.data[key])
            except ValueError as exc:
                raise table.fail(key, f"{table.data[key]!r}: {exc}", f"write {key} = {option.toml_value}") from None
    return TechniqueSettings(**values)


