"""Formats, recipes, technique steps and every option they take: declared here once, read by the
recipe parser, the profile's `[techniques]` check, `edgekit recipes` and the README tables
(`scripts/readme_tables.py`). Light on purpose: parsing a profile must not import torch.

A recipe is `[STEP+]...FORMAT:PRECISION[?KEY=VALUE&...]`:

    onnx:int8-static
    onnx:int8-static?calibration=entropy&types=u8u8&per_channel=false
    prune:0.5+kd+onnx:int8-static

Recipe options follow in URL query form; they are validated against their declaration and sorted
into a canonical name (so `a=1&b=2` and `b=2&a=1` are the same variant and the same cache entry)
and handed to the builder as `recipe.opts` (`recipe.value(key)` adds the declared default).

Technique steps go in front and transform a copy of the torch model, in order, before the export
step builds the artifact; parity and accuracy are still measured against the ORIGINAL model, so
every accuracy drop is the honest end-to-end one. A step is `NAME[:VALUE][,KEY=VALUE...]`; its
options default to the profile's `[techniques]` table (PROFILE_OPTIONS, `settings.TechniqueSettings`).
Neuron merging follows Kim et al., "Neuron Merging: Compensating for Pruned Neurons", NeurIPS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import SpecError
from ..settings import AUGMENTS, IMPORTANCES, SCHEDULES, TechniqueSettings
from .options import Option

GRAMMAR = "[STEP+]...FORMAT:PRECISION[?KEY=VALUE&...]"
DEFAULT_BUDGET = 0.01  # onnx:int8-mixed's accuracy budget when neither the recipe nor the profile sets one


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    runtime: str  # what the agent needs on the device to run the artifact (the runner table's name)
    suffix: str
    extra: str | None = None  # the pip extra whose packages the builders import
    note: str = ""


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", "ONNX", "onnxruntime", ".onnx"),
    Format("torchscript", "TorchScript", "torch", ".pt", note="deprecated upstream; recorded in variant.json"),
    Format("tflite", "TFLite", "tflite", ".tflite", extra="tflite"),
    Format("executorch", "ExecuTorch", "executorch", ".pte", extra="executorch"),
)}


# --------------------------------------------------------------------------- recipe options

FOLD_BN = Option("fold_bn", "bool", True, "fold BatchNorm into the preceding convolution / linear layer before export")
KEEP_IO_TYPES = Option("keep_io_types", "bool", True, "fp32 inputs and outputs around the fp16 graph")
INT8_TYPES = ("u8s8", "u8s8-reduced", "u8u8", "s8s8")
_TYPES_HELP = "activation x weight int8 types of ONNX Runtime's kernels; -reduced is 7-bit weights (reduce_range)"
STATIC_TYPES = Option("types", "choice", None, _TYPES_HELP, choices=INT8_TYPES,
                      default_from="the target's ISA when probed: u8s8 with VNNI or on ARM, else u8s8-reduced; "
                                   "variant.json records which and why")
DYNAMIC_TYPES = Option("types", "choice", "u8s8", _TYPES_HELP, choices=INT8_TYPES[:3])
CALIBRATION = Option("calibration", "choice", "minmax", "how activation ranges are read from the calibration data",
                     choices=("minmax", "entropy", "percentile"))
PERCENTILE = Option("percentile", "float", 99.999, "the activation percentile kept by calibration=percentile",
                    low=50.0, high=100.0)
BUDGET = Option("budget", "float", None, "accuracy drop allowed; the most sensitive layers stay float until it holds",
                low=0.0, high=1.0, default_from=f"the profile's max_accuracy_drop, else {DEFAULT_BUDGET:g}",
                example="0.01")


def _per_channel(default: bool) -> Option:
    return Option("per_channel", "bool", default, "one scale per output channel of each weight, not per tensor")


STATIC = (_per_channel(True), STATIC_TYPES, CALIBRATION, PERCENTILE)


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    name: str  # canonical: steps, base name, sorted options
    format: str
    precision: str
    runtime: str  # from its Format
    builder: str  # "module:function" under edgekit.compress, imported only when building
    suffix: str  # from its Format
    uses_calibration: bool = False
    summary: str = ""
    extra: str | None = None  # from its Format
    options: tuple[Option, ...] = ()  # what the recipe accepts
    given: tuple[tuple[str, str], ...] = ()  # what the recipe name set, sorted, as spelled in the name
    techniques: tuple = ()  # technique steps (Step) applied before export

    @property
    def base(self) -> str:
        return f"{self.format}:{self.precision}"

    @property
    def opts(self) -> dict[str, str]:
        return dict(self.given)

    def option(self, key: str) -> Option:
        found = next((o for o in self.options if o.name == key), None)
        if found is None:
            raise KeyError(f"{self.base} declares no option {key!r}")
        return found

    def value(self, key: str) -> Any:
        """The option as the name set it, else its declared default (None: the context decides)."""
        option = self.option(key)
        given = self.opts.get(key)
        return option.default if given is None else option.parse(given)


def _r(name: str, builder: str, summary: str, options: tuple[Option, ...] = (), calibration: bool = False) -> Recipe:
    fmt, _, precision = name.partition(":")
    f = FORMATS[fmt]
    return Recipe(name, fmt, precision, f.runtime, builder, f.suffix, calibration, summary, f.extra,
                  (FOLD_BN, *options))


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    _r("onnx:fp32", "onnx:build_fp32", "torch.onnx export (dynamo), opset 18"),
    _r("onnx:fp16", "onnx:build_fp16", "fp16 weights and compute, fp32 inputs/outputs (keep_io_types)",
       (KEEP_IO_TYPES,)),
    _r("onnx:int8-dynamic", "onnx:build_int8_dynamic",
       "ORT dynamic int8 (weights int8, activations at run time); for Linear-heavy nets, slow on convs",
       (_per_channel(False), DYNAMIC_TYPES)),
    _r("onnx:int8-static", "onnx:build_int8_static",
       "ORT static QDQ int8 calibrated on your data; types default from the target ISA", STATIC, calibration=True),
    _r("onnx:int8-mixed", "mixed:build_onnx_mixed",
       "static int8 with the most sensitive layers kept float until the accuracy budget holds",
       (*STATIC, BUDGET), calibration=True),
    _r("torchscript:fp32", "torchscript:build_fp32", "torch.jit.trace + freeze (TorchScript is deprecated upstream)"),
    _r("torchscript:int8", "torchscript:build_int8",
       "FX graph mode int8 (x86/fbgemm), traced and frozen (deprecated upstream)", calibration=True),
    _r("tflite:fp32", "tflite:build_fp32", "litert-torch conversion"),
    _r("tflite:fp16", "tflite:build_fp16", "fp16 weights (ai-edge-quantizer)"),
    _r("tflite:int8-dynamic", "tflite:build_int8_dynamic",
       "dynamic-range int8: int8 weights, float activations (ai-edge-quantizer)"),
    _r("tflite:int8-static", "tflite:build_int8_static",
       "full static int8 calibrated on your data (ai-edge-quantizer)", calibration=True),
    _r("executorch:fp32", "executorch:build_fp32", "ExecuTorch .pte, XNNPACK delegate"),
    _r("executorch:int8", "executorch:build_int8",
       "ExecuTorch .pte, XNNPACK int8 (PT2E static, calibrated on your data)", calibration=True),
)}


# --------------------------------------------------------------------------- technique options

_D = TechniqueSettings()
# The profile's `[techniques]` table: every step's defaults. The defaults are the settings
# dataclass's own, so a profile without the table and one that spells out every default agree.
PROFILE_OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("epochs", "int", _D.epochs, "fine-tuning epochs after a step, on [data] training (0: none)", low=0),
    Option("lr", "float", _D.lr, "learning rate of fine-tuning and kd (Adam)", low=0.0, open_low=True),
    Option("batch_size", "int", _D.batch_size, "training batch size", low=1),
    Option("seed", "int", _D.seed, "seed of data order, augmentation and k-means", low=0),
    Option("importance", "choice", _D.importance, "how prune ranks channels (prune-l1, prune-l2, prune-taylor "
           "set it inline)", choices=IMPORTANCES),
    Option("iterations", "int", _D.iterations, "prune in this many rounds, fine-tuning between (1: one-shot)", low=1),
    Option("ignore", "names", _D.ignore, "modules prune and merge leave alone, on top of the classifier head "
           "(always kept so the outputs keep their meaning)"),
    Option("temperature", "float", _D.temperature, "kd softmax temperature", low=0.0, open_low=True),
    Option("alpha", "float", _D.alpha, "kd loss: alpha x the teacher's soft targets + (1 - alpha) x the labels",
           low=0.0, high=1.0),
    Option("student", "entry", _D.student, "module:function building an untrained student for kd",
           default_from="the model the earlier steps made", example="package.module:function"),
    Option("augment", "choice", _D.augment, "image inputs, transformed afresh each time used (in kd the teacher "
           "labels the transformed image): shift moves by up to ~7 % of the side; affine also rotates up to 10 "
           "degrees and scales 0.9..1.1", choices=AUGMENTS),
    Option("schedule", "choice", _D.schedule, "learning rate over the epochs (cosine anneals it to 0)",
           choices=SCHEDULES),
)}
MERGE_CRITERIA = ("cosine", "l2")  # neuron_merge.CRITERIA
TRAIN = tuple(PROFILE_OPTIONS[k] for k in ("epochs", "lr", "augment", "schedule"))
ALWAYS_READ = ("batch_size", "seed")  # every step may train


@dataclass(frozen=True)
class Technique:
    name: str
    summary: str
    apply: str  # "module:function" under edgekit.compress, imported only when the step runs
    value: Option | None  # the positional `NAME:VALUE`, required when declared
    options: tuple[Option, ...]  # inline `KEY=VALUE`; those in PROFILE_OPTIONS default to `[techniques]`
    reads: tuple[str, ...] = ()  # `[techniques]` keys it uses that no inline option sets
    own_defaults: tuple[tuple[str, Any], ...] = ()  # its defaults over `[techniques]`
    place: tuple[str, ...] = ()  # what `apply` is told of the step's place: fine_tune, student_given
    retrains: bool = False  # trains every weight: a step just before it need not fine-tune
    before: tuple[str, ...] = ()  # steps it must precede: they set weights it would retrain
    once: bool = False

    @property
    def accepted(self) -> dict[str, Option]:
        return {o.name: o for o in ((self.value,) if self.value else ()) + self.options}

    def default(self, key: str) -> str:
        """The default of an inline option in words, for the docs."""
        own = dict(self.own_defaults)
        if key in own:
            return self.accepted[key].text(own[key])
        if key in PROFILE_OPTIONS:
            return f"[techniques] {key}"
        return self.accepted[key].default_text

    @property
    def example(self) -> str:
        return self.name + (f":{self.value.fix_value}" if self.value else "")

    def example_with(self, option: Option) -> str:
        """A valid step setting `option`: `prune:0.5,epochs=2`, `kd:alpha=0.9`."""
        if option is self.value:
            return self.example
        return f"{self.example}{',' if self.value else ':'}{option.name}={option.fix_value}"

    @property
    def usage(self) -> str:
        """`prune:RATIO[,importance=l1|l2|taylor,...]`, for the docs."""
        head = self.name + (f":{self.value.name.upper()}" if self.value else "")
        rest = ",".join(f"{o.name}={o.values if o.type in ('bool', 'choice') else o.type.upper()}"
                        for o in self.options)
        return f"{head}[{',' if self.value else ':'}{rest}]" if rest else head


RATIO = Option("ratio", "float", None, "share of the channels removed", low=0.0, high=1.0, open_low=True,
               open_high=True, example="0.5")
TECHNIQUES: dict[str, Technique] = {t.name: t for t in (
    Technique("prune", "structured channel pruning (torch-pruning DependencyGraph), then fine-tuning on "
              "[data] training", "prune:apply", RATIO,
              (PROFILE_OPTIONS["importance"], PROFILE_OPTIONS["iterations"], *TRAIN),
              reads=(*ALWAYS_READ, "ignore"), place=("fine_tune",)),
    Technique("merge", "neuron merging: removes channels like prune but first folds each into its most similar "
              "kept one, so accuracy holds without data or training; plain pruning (the report says so) "
              "where that cannot be exact or bounded", "neuron_merge:apply",
              replace(RATIO, help="share of the channels merged away"),
              (Option("criterion", "choice", "cosine", "cosine: the channels merging reproduces best go first; "
                      "l2: the channels prune removes", choices=MERGE_CRITERIA), *TRAIN),
              reads=(*ALWAYS_READ, "ignore"), own_defaults=(("epochs", 0),), place=("fine_tune",)),
    Technique("sparsity", "unstructured magnitude pruning, fine-tuned with the mask kept: a smaller gzip file, "
              "the same latency on dense runtimes", "sparsity:apply",
              replace(RATIO, help="share of the weights set to zero", example="0.8"), TRAIN, reads=ALWAYS_READ),
    Technique("cluster", "weight sharing: k-means per layer to N shared values, then centroid fine-tuning",
              "cluster:apply", Option("clusters", "int", None, "shared values per layer", low=2, high=65536,
                                      example="16"), TRAIN, reads=ALWAYS_READ),
    Technique("kd", "distillation from the original model into the student the earlier steps made (or "
              "[techniques] student); also reports the same student trained without the teacher",
              "distill:apply", None, (PROFILE_OPTIONS["temperature"], PROFILE_OPTIONS["alpha"], *TRAIN),
              reads=(*ALWAYS_READ, "student"), place=("student_given",), retrains=True,
              before=("sparsity", "cluster"), once=True),
)}
# prune-l1:0.5 is prune:0.5,importance=l1
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {f"prune-{imp}": ("prune", {"importance": imp})
                                                   for imp in IMPORTANCES}


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    name: str  # a TECHNIQUES key
    options: tuple[tuple[str, Any], ...]  # the inline options, typed, sorted by key
    text: str  # canonical spelling, part of the recipe name and so of the cache key

    @property
    def technique(self) -> Technique:
        return TECHNIQUES[self.name]

    def resolve(self, defaults: TechniqueSettings) -> dict[str, Any]:
        """Effective options: the profile's `[techniques]` defaults under the step's own, under the inline ones."""
        t = self.technique
        wanted = {*t.accepted, *t.reads}
        base = {k: v for k, v in defaults.to_dict().items() if k in wanted}
        declared = {k: o.default for k, o in t.accepted.items() if k not in PROFILE_OPTIONS and o.default is not None}
        return {**base, **declared, **dict(t.own_defaults), **dict(self.options)}


def parse_step(text: str, recipe: str) -> Step:
    """`prune:0.5`, `prune-taylor:0.3,iterations=3`, `cluster:16,epochs=0`, `kd:temperature=2`."""
    head, _, rest = text.strip().partition(":")
    name = head.strip().lower()
    options: dict[str, Any] = {}
    if name in ALIASES:
        name, options = ALIASES[name][0], dict(ALIASES[name][1])
    technique = TECHNIQUES.get(name)
    if technique is None:
        known = ", ".join([*TECHNIQUES, *ALIASES])
        raise SpecError(f"recipe {recipe!r}: unknown technique {head!r}. Fix: use one of {known}, "
                        f"then an export such as onnx:int8-static")
    accepted = technique.accepted
    for i, item in enumerate(p.strip() for p in rest.split(",") if p.strip()) if rest else ():
        key, eq, value = item.partition("=")
        if not eq:
            if i > 0 or technique.value is None:
                raise SpecError(f"recipe {recipe!r}: {text!r}: {item!r} must be KEY=VALUE. "
                                f"Fix: write e.g. {name}:{'0.5,' if technique.value else ''}epochs=2")
            key, value = technique.value.name, item
        key = key.strip()
        option = accepted.get(key)
        if option is None:
            raise SpecError(f"recipe {recipe!r}: {name} has no option {key!r}. Fix: use one of {', '.join(accepted)}")
        try:
            options[key] = option.parse(value)
        except ValueError as exc:
            raise SpecError(f"recipe {recipe!r}: {name} {key}={value.strip()!r}: {exc}. "
                            f"Fix: write e.g. {technique.example_with(option)}") from None
    if technique.value is not None and technique.value.name not in options:
        raise SpecError(f"recipe {recipe!r}: {name} needs its {technique.value.name}. Fix: write e.g. "
                        f"{technique.example}")
    return Step(name, tuple(sorted(options.items())), _step_text(technique, options))


def _step_text(technique: Technique, options: dict[str, Any]) -> str:
    """`prune:0.5,epochs=2`: the value first, then the options by key; part of names and cache keys."""
    positional = technique.value.name if technique.value else None
    lead = options.get(positional) if positional else None
    rest = ",".join(f"{k}={v}" for k, v in sorted(options.items()) if k != positional)
    return technique.name + (f":{lead}" if lead is not None else "") + (
        ("," if lead is not None else ":") + rest if rest else "")


def parse_steps(parts: list[str], recipe: str) -> tuple[Step, ...]:
    steps = tuple(parse_step(p, recipe) for p in parts)
    if not steps:
        raise SpecError(f"recipe {recipe!r}: empty technique list. Fix: write e.g. prune:0.5+onnx:fp32")
    for i, step in enumerate(steps):
        for later in steps[i + 1:]:
            if step.name in later.technique.before:
                raise SpecError(f"recipe {recipe!r}: {later.name} after {step.name} would retrain the weights "
                                f"{step.name} set. Fix: put {later.name} before {step.name}")
    for name, technique in TECHNIQUES.items():
        if technique.once and sum(s.name == name for s in steps) > 1:
            raise SpecError(f"recipe {recipe!r}: {name} appears twice. Fix: keep one {name} step")
    return steps


# --------------------------------------------------------------------------- recipe names


def _recipe_option(base: str, recipe: Recipe, pair: str, text: str) -> tuple[str, str]:
    allowed = {o.name: o for o in recipe.options}
    key, eq, value = pair.partition("=")
    key = key.strip()
    if not eq or not key or not value.strip():
        raise SpecError(f"recipe {text!r}: {pair!r} is not key=value. "
                        f"Fix: write e.g. {base}?{recipe.options[0].name}=...")
    option = allowed.get(key)
    if option is None:
        raise SpecError(f"recipe {base}: unknown option {key!r}. Fix: use one of {', '.join(allowed)}")
    try:
        return key, option.spelling(value)
    except ValueError as exc:
        raise SpecError(f"recipe {base}: option {key}={value.strip()!r} {exc}. "
                        f"Fix: write e.g. {key}={option.fix_value}") from None


def parse_recipe(text: str) -> Recipe:
    """`[STEP+]...format:precision[?key=value&...]` -> the validated recipe with a canonical name."""
    if "+" in text:  # technique steps: `STEP+STEP+FORMAT:PRECISION`; the last part is the export recipe
        *steps, export = [part.strip() for part in text.split("+")]
        base = parse_recipe(export)
        parsed = parse_steps(steps, text)
        return replace(base, name="+".join([s.text for s in parsed] + [base.name]), techniques=parsed)
    base, _, query = text.strip().partition("?")
    recipe = RECIPES.get(base)
    if recipe is None:
        raise SpecError(f"unknown recipe {base!r}; known: {', '.join(RECIPES)}")
    if not query:
        return recipe
    given = dict(_recipe_option(base, recipe, pair, text) for pair in query.split("&"))
    canonical = base + "?" + "&".join(f"{k}={v}" for k, v in sorted(given.items()))
    return replace(recipe, name=canonical, given=tuple(sorted(given.items())))


def canonical_name(text: str) -> str:
    """The canonical spelling of a recipe, or `text` itself when it is not one (a variant id, say)."""
    try:
        return parse_recipe(text).name
    except SpecError:
        return text
