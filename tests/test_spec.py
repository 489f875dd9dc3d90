"""Every bad field names the file, the key and the fix."""

import re
from pathlib import Path

import pytest

from edgekit.errors import SpecError
from edgekit.config import available, load_model_spec, load_profile, load_target, parse_input

GOOD_MODEL = """
[model]
name = "m"
factory = "pkg.mod:build"
inputs = [{ name = "input", shape = [1, 1, 8, 8], dtype = "float32" }]
"""


def write(tmp_path: Path, text: str, name: str = "edgekit.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_model_spec(tmp_path):
    spec = load_model_spec(write(tmp_path, GOOD_MODEL))
    assert spec.factory == "pkg.mod:build"
    assert spec.inputs[0].shape == (1, 1, 8, 8)


@pytest.mark.parametrize("text, key, fix", [
    ("[model\nname = 'x'", "malformed TOML", "correct the syntax"),
    (GOOD_MODEL.replace('factory = "pkg.mod:build"', 'factory = "pkg.mod.build"'), "[model] factory", "module:function"),
    (GOOD_MODEL.replace("shape = [1, 1, 8, 8]", 'shape = "1x1x8x8"'), "[model] inputs[0].shape", "shape = ["),
    (GOOD_MODEL.replace("shape = [1, 1, 8, 8]", "shape = [1, 0, 8]"), "[model] inputs[0]", "every dimension"),
    (GOOD_MODEL.replace('dtype = "float32"', 'dtype = "float64x"'), "[model] inputs[0]", "use one of"),
    (GOOD_MODEL.replace('name = "m"\n', ""), "[model] name", 'name = "..."'),
    (GOOD_MODEL + 'path = "model.onnx"\n', "[model] factory", "exactly one"),
    (GOOD_MODEL + 'checkpoint = "missing.pt"\n', "[model] checkpoint", "existing weights file"),
    (GOOD_MODEL + 'colour = "red"\n', "[model] colour", "unknown key"),
    (GOOD_MODEL + '[data]\ncalibration = "nope.npz"\n', "[data] calibration", "existing .npz"),
])
def test_bad_model_spec_names_file_key_and_fix(tmp_path, text, key, fix):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_model_spec(path)
    message = str(info.value)
    assert str(path) in message and key in message and fix in message and "Fix:" in message
    assert "\n" not in message


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_model_spec(tmp_path / "nope.toml")


def test_input_flag_parsing():
    assert parse_input("x:1x3x32x32").shape == (1, 3, 32, 32)
    assert parse_input("x:2x4:int64").dtype == "int64"
    for bad in ("x", "x:1xa", "x:1x2:complex", ":1x2"):
        with pytest.raises(SpecError, match="Fix:"):
            parse_input(bad)


def test_builtin_target_and_profile_load():
    assert load_target("local").transport == "local"
    prof = load_profile("balanced")
    assert prof.recipes == ("onnx:fp32", "onnx:int8-static")
    assert prof.bench.rounds == 3  # interleaved rounds unless the profile says otherwise
    assert prof.select.constraints == {"max_accuracy_drop": 0.01}


def test_unknown_target_and_profile_list_what_exists(workdir):
    with pytest.raises(SpecError, match="unknown target. Fix: use one of .*local"):
        load_target("jetson-xyz")
    with pytest.raises(SpecError, match="unknown profile. Fix: use one of .*balanced"):
        load_profile("fastest-ever")


def test_project_files_override_builtins(workdir):
    (workdir / "targets").mkdir()
    (workdir / "targets" / "local.toml").write_text('transport = "local"\nworkdir = "~/elsewhere"\n')
    assert load_target("local").workdir == "~/elsewhere"
    assert available("profiles")["fast"].parent == workdir / "profiles"


TECHNIQUES = '[build]\nrecipes = ["onnx:fp32"]\n[techniques]\n'


@pytest.mark.parametrize("text, fragment", [
    ('[build]\nrecipes = ["onnx:int3"]\n', "unknown recipe 'onnx:int3'"),
    ('[build]\nrecipes = []\n', "[build] recipes: missing or empty"),
    ('[build]\nrecipes = ["onnx:fp32"]\n[select]\nobjective = "vibes"\n', "[select] objective"),
    ('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nmin_runs = -1\n', "[bench] min_runs"),
    ('[build]\nrecipes = ["onnx:fp32"]\n[select]\nconstraints = { max_speed = 1 }\n', "max_speed: unknown key"),
    ('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nrounds = 0\n', "[bench] rounds: expected an integer >= 1"),
    ('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nrounds = 2.5\n', "[bench] rounds: expected an integer"),
    ('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nrounds = 500\n', "[bench] rounds: expected 1..100"),
    # [techniques]: each key checked against its declaration (compress/registry.py PROFILE_OPTIONS)
    (TECHNIQUES + 'epochs = -1\n', "[techniques] epochs: -1: must be a whole number >= 0"),
    (TECHNIQUES + 'epochs = 2.5\n', "[techniques] epochs: 2.5: must be a whole"),
    (TECHNIQUES + 'lr = 0\n', "[techniques] lr: 0: must be a number > 0. Fix: write lr = 0.001"),
    (TECHNIQUES + 'temperature = inf\n', "[techniques] temperature: inf"),
    (TECHNIQUES + 'alpha = 1.5\n', "[techniques] alpha: 1.5: must be a number in 0..1"),
    (TECHNIQUES + 'batch_size = true\n', "[techniques] batch_size: True: must be"),
    (TECHNIQUES + 'student = "nocolon"\n', "student: 'nocolon': must be module:function. "
                                          'Fix: write student = "package.module:function"'),
    (TECHNIQUES + 'ignore = ["fc", 3]\n', "ignore: ['fc', 3]: must be a list of strings"),
    (TECHNIQUES + 'schedule = "step"\n', "must be one of constant, cosine"),
    (TECHNIQUES + 'epoch = 3\n', "[techniques] epoch: unknown key. Fix: use one of alpha"),
])
def test_bad_profile(workdir, text, fragment):
    (workdir / "profiles" / "bad.toml").write_text(text)
    with pytest.raises(SpecError) as info:
        load_profile("bad")
    assert fragment in str(info.value) and "bad.toml" in str(info.value)


def test_a_key_with_a_newline_or_escape_stays_on_one_line(workdir):
    (workdir / "profiles" / "bad.toml").write_text('[build]\nrecipes = ["onnx:fp32"]\n[bench]\n"min_s\\nFAKE\\u001b[2J" = 1\n')
    with pytest.raises(SpecError) as info:
        load_profile("bad")
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message, message
    assert "[bench] 'min_s\\nFAKE\\x1b[2J': unknown key" in message and "bad.toml" in message


def test_ssh_target_needs_host(workdir):
    (workdir / "targets").mkdir()
    (workdir / "targets" / "pi.toml").write_text('user = "pi"\n')
    with pytest.raises(SpecError, match=r"pi.toml: host: missing"):
        load_target("pi")


@pytest.mark.parametrize("value, ok", [("~/.edgekit", True), ("~", True), ("/srv/edgekit", True),
                                       ("edgekit", True), ("~bob/edgekit", False), ("~bob", False)])
def test_a_workdir_means_one_place_for_every_command(workdir, value, ok):
    """`~user/...` is refused: sftp reads it relative to the login directory, the agent as user's home."""
    (workdir / "targets").mkdir(exist_ok=True)
    (workdir / "targets" / "pi.toml").write_text(f'host = "pi"\nworkdir = "{value}"\n')
    if ok:
        assert load_target("pi").workdir == value
    else:
        with pytest.raises(SpecError, match=r"pi.toml: workdir: .*a ~user path means different places.*Fix: "
                                            r"write it as an absolute path \(e.g. /home/bob/...\) or as ~/"):
            load_target("pi")


def _spec(tmp_path, inputs: str, extra: str = ""):
    from edgekit.config import load_model_spec

    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "edgekit.toml").write_text(f'[model]\nname = "m"\npath = "m.pt"\ninputs = [{inputs}]\n{extra}')
    return load_model_spec(tmp_path / "edgekit.toml")


def test_scalar_batch_axis_and_values(tmp_path):
    spec = _spec(tmp_path, '{ name = "x", shape = [1, 512] }, { name = "sr", shape = [], dtype = "int64", '
                           'values = [16000] }, { name = "state", shape = [2, 1, 64], batch_axis = 1 }')
    x, sr, state = spec.inputs
    assert sr.scalar and sr.values == (16000,) and sr.batch is None
    assert state.batch_axis == 1 and state.sample_shape == (2, 64) and spec.batch_size == 1
    assert state.to_dict() == {"name": "state", "shape": [2, 1, 64], "dtype": "float32", "batch_axis": 1}


@pytest.mark.parametrize("item, message", [
    ('{ name = "x", shape = [1, 3], dype = "int64" }', "inputs[0].dype: unknown key"),
    ('{ name = "x", shape = [1, 3], batch_axis = 2 }', "batch_axis 2 is outside the shape"),
    ('{ name = "x", shape = [1, 3], values = [1] }', "values is for integer and bool inputs"),
    ('{ name = "x", shape = [1, 0] }', "must be positive integers"),
    ('{ name = "x", shape = [1, 3], dtype = "complex64" }', "dtype 'complex64' is not supported"),
])
def test_bad_input_items_are_one_line_errors(tmp_path, item, message):
    from edgekit.errors import SpecError

    with pytest.raises(SpecError, match=re.escape(message)):
        _spec(tmp_path, item)


def test_task_and_metric_keys(tmp_path):
    from edgekit.errors import SpecError

    spec = _spec(tmp_path, '{ name = "x", shape = [1, 3] }', 'task = "classification"\n[data]\nmetric = "m:f"\n')
    assert spec.task == "classification" and spec.metric == "m:f"
    with pytest.raises(SpecError, match="task: 'detection' is not known"):
        _spec(tmp_path, '{ name = "x", shape = [1, 3] }', 'task = "detection"\n')


def test_nonfinite_numbers_are_refused(tmp_path, monkeypatch):
    from edgekit.errors import SpecError
    from edgekit.config import load_profile

    (tmp_path / "p.toml").write_text('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nwarmup_s = nan\n')
    with pytest.raises(SpecError, match="finite number"):
        load_profile(str(tmp_path / "p.toml"))
    (tmp_path / "p.toml").write_text('[build]\nrecipes = ["onnx:fp32"]\n[select]\nconstraints = { min_cosine = 1.5 }\n')
    with pytest.raises(SpecError, match="min_cosine: expected 0..1"):
        load_profile(str(tmp_path / "p.toml"))


BAD_NAMES = ["../x", "a/b", "..", ".", "", "m\n", "-m", ".hidden", "a..b", "x" * 65, "déjà", "a b", "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_model_names_are_checked_where_the_spec_is_read(tmp_path, name):
    import json

    text = GOOD_MODEL.replace('name = "m"', f"name = {json.dumps(name)}")
    with pytest.raises(SpecError, match=r"\[model\] name: .*(is not a model name|non-empty).*Fix: write"):
        load_model_spec(write(tmp_path, text))


@pytest.mark.parametrize("name", ["m", "det.v2", "A_b-3", "x" * 64, "0"])
def test_good_model_names(tmp_path, name):
    assert load_model_spec(write(tmp_path, GOOD_MODEL.replace('name = "m"', f'name = "{name}"'))).name == name


def test_cli_names_are_checked_before_any_work(workdir):
    from conftest import run_cli

    for args in (("--name", "../x"), ("--name", "m\n"), ("--name", "")):
        proc = run_cli("compress", *args, "--json")
        assert proc.returncode == 2 and "is not a model name" in proc.stderr and "Fix: e.g. --name" in proc.stderr, \
            (args, proc.stderr)
        assert not (workdir / ".edgekit").exists()
    bad_stem = workdir / "my model.pt"
    bad_stem.write_bytes(b"")
    proc = run_cli("compress", "--model-path", str(bad_stem), "--input", "x:1x4", "--json")
    assert proc.returncode == 2 and "taken from the file name" in proc.stderr and "add --name" in proc.stderr
    proc = run_cli("rollback", "--target", "local", "--model", "../../etc")
    assert proc.returncode == 2 and "--model '../../etc' is not a model name" in proc.stderr
