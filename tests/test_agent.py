"""The agent as shipped: the zipapp, run by a real Python in a fresh process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle import agent_zipapp, write_agent



def find_python(version: str) -> str | None:
    """A real interpreter of that version (pyenv's shims refuse to run unselected versions)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(root.glob(f"versions/{version}*/bin/python{version}")) + [shutil.which(f"python{version}")]
    for candidate in filter(None, candidates):
        if subprocess.run([str(candidate), "-V"], capture_output=True).returncode == 0:
            return str(candidate)
    return None


PY38 = find_python("3.8")


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    return write_agent(tmp_path_factory.mktemp("agent") / "edgekit-agent.pyz")


def call(agent, *args, python=sys.executable, cwd=None):
    proc = subprocess.run([str(python), str(agent), *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON document, got: {proc.stdout!r} / {proc.stderr!r}"
    doc = json.loads(lines[0])
    assert doc["schema"] == 1
    return proc.returncode, doc


def test_zipapp_is_reproducible_and_self_contained(agent):
    assert agent_zipapp()[0] == agent.read_bytes()
    import zipfile

    names = zipfile.ZipFile(agent).namelist()
    assert "__main__.py" in names and "edgekit_agent/cli.py" in names
    for name in names:
        source = zipfile.ZipFile(agent).read(name).decode()
        assert "from edgekit" not in source.replace("from edgekit_agent", "")
        assert "import edgekit\n" not in source


def test_probe_describes_this_machine(agent):
    rc, doc = call(agent, "probe")
    assert rc == 0
    assert doc["arch"] == os.uname().machine
    assert doc["cores"]["affinity"] == len(os.sched_getaffinity(0))
    assert doc["memory"]["total_bytes"] > 0
    assert "onnxruntime" in doc["runtimes"] and "CPUExecutionProvider" in doc["runtimes"]["onnxruntime"]["providers"]
    assert doc["python"]["version"] == ".".join(map(str, sys.version_info[:3]))


@pytest.mark.skipif(PY38 is None, reason="no python3.8 on this machine")
def test_agent_runs_on_python38_without_host_code(agent, tmp_path):
    rc, doc = call(agent, "probe", python=PY38, cwd=tmp_path)
    assert rc == 0 and doc["python"]["version"].startswith("3.8")
    rc, doc = call(agent, "status", "--workdir", str(tmp_path / "w"), python=PY38, cwd=tmp_path)
    assert rc == 0 and doc["models"] == {}


PY38_SITE = Path(__file__).resolve().parent.parent / ".venv" / "py38-site"


@pytest.mark.skipif(PY38 is None or not (PY38_SITE / "onnxruntime").is_dir(),
                    reason="no python3.8 with numpy + onnxruntime (scripts/test installs them into .venv/py38-site)")
def test_agent_benches_on_python38(agent, built, tmp_path):
    _, variants = built
    v = variants["onnx:int8-static"]
    env = dict(os.environ, PYTHONPATH=str(PY38_SITE))
    proc = subprocess.run([PY38, str(agent), "bench", "--artifact", v.path, "--runtime", "onnxruntime", "--sha256",
                           v.sha256, "--warmup-s", "0.05", "--min-runs", "30", "--min-s", "0.2", "--idle-s", "0"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, doc
    assert doc["latency"]["n"] >= 30 and doc["runtime"]["name"] == "onnxruntime"
    assert "available" in doc["power"] and "before" in doc["thermal"] and "other_cpu" in doc["load"]
    np.savez(tmp_path / "in.npz", input=np.zeros((2, 1, 1, 8, 8), np.float32))
    proc = subprocess.run([PY38, str(agent), "run", "--artifact", v.path, "--runtime", "onnxruntime", "--inputs",
                           str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["batches"] == 2


def test_probe_reads_cgroup_limits_and_board_under_a_root(agent, tmp_path):
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("4:memory:/edgekit/dev\n3:cpu,cpuacct:/edgekit/dev\n")
    (root / "sys/fs/cgroup/memory/edgekit/dev").mkdir(parents=True)
    (root / "sys/fs/cgroup/memory/edgekit/dev/memory.limit_in_bytes").write_text("268435456\n")
    (root / "sys/fs/cgroup/cpu,cpuacct/edgekit").mkdir(parents=True)
    (root / "sys/fs/cgroup/cpu,cpuacct/edgekit/cpu.cfs_quota_us").write_text("50000\n")
    (root / "sys/fs/cgroup/cpu,cpuacct/edgekit/cpu.cfs_period_us").write_text("100000\n")
    (root / "proc/meminfo").write_text("MemTotal:        3884960 kB\nMemAvailable:    3000000 kB\n")
    rc, doc = call(agent, "probe", "--root", str(root))
    assert rc == 0
    assert doc["memory"]["cgroup_limit_bytes"] == 268435456 == doc["memory"]["usable_bytes"]
    assert doc["cores"]["cgroup_quota"] == 0.5 and doc["cores"]["usable"] == 1


def test_bench_measures_a_real_model(agent, built):
    _, variants = built
    v = variants["onnx:int8-static"]
    rc, doc = call(agent, "bench", "--artifact", v.path, "--runtime", "onnxruntime", "--sha256", v.sha256,
                   "--warmup-s", "0.05", "--min-runs", "30", "--min-s", "0.2")
    assert rc == 0, doc
    lat = doc["latency"]
    assert lat["n"] == len(doc["samples_ms"]) >= 30
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["ci95_median_ms"][0] <= lat["p50_ms"] <= lat["ci95_median_ms"][1]
    assert doc["window"]["seconds"] >= 0.2 and doc["window"]["runs"] == lat["n"]
    assert sum(doc["samples_ms"]) / 1000 <= doc["window"]["seconds"]
    assert doc["cold"]["load_ms"] > 0 and doc["cold"]["first_inference_ms"] > 0
    assert doc["memory"]["peak_rss_mb"] >= doc["memory"]["peak_rss_mb_before_load"] > 0
    assert doc["inputs"] == [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    # What other processes took of the usable cores during the window (a share; this machine is shared).
    assert 0.0 <= doc["load"]["other_cpu"] <= 1.0 and doc["load"]["cores"] == len(os.sched_getaffinity(0))


def test_run_returns_the_models_outputs(agent, built, tmp_path):
    ctx, variants = built
    v = variants["onnx:fp32"]
    x = ctx.evaluation.inputs["input"][:10].reshape(10, 1, 1, 8, 8)  # 10 batches of [1, 1, 8, 8]
    np.savez(tmp_path / "in.npz", input=x)
    rc, doc = call(agent, "run", "--artifact", v.path, "--runtime", "onnxruntime", "--inputs", str(tmp_path / "in.npz"),
                   "--outputs", str(tmp_path / "out.npz"))
    assert rc == 0 and doc["batches"] == 10
    out = np.load(tmp_path / "out.npz")["output_0"].reshape(10, -1)
    assert np.abs(out - ctx.reference[0][:10].reshape(10, -1)).max() < 1e-4


@pytest.mark.parametrize("case, kind", [
    ("missing", "artifact_missing"), ("corrupt", "artifact_corrupt"), ("garbage", "load_failed"),
    ("runtime", "bad_request"), ("args", "bad_request"),
])
def test_failures_are_one_json_error_and_never_a_traceback(agent, built, tmp_path, case, kind):
    _, variants = built
    v = variants["onnx:fp32"]
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not an onnx file")
    args = {
        "missing": ["bench", "--artifact", str(tmp_path / "nope.onnx"), "--runtime", "onnxruntime"],
        "corrupt": ["bench", "--artifact", str(garbage), "--runtime", "onnxruntime", "--sha256", v.sha256],
        "garbage": ["bench", "--artifact", str(garbage), "--runtime", "onnxruntime"],
        "runtime": ["bench", "--artifact", v.path, "--runtime", "coreml"],
        "args": ["bench", "--runtime", "onnxruntime"],
    }[case]
    rc, doc = call(agent, *args)
    assert rc != 0
    assert doc["error"]["kind"] == kind and doc["error"]["message"]


def test_install_activate_rollback(agent, built, tmp_path):
    _, variants = built
    w = str(tmp_path / "device")
    fp32, int8 = variants["onnx:fp32"], variants["onnx:int8-static"]

    rc, doc = call(agent, "install", "--workdir", w, "--model", "m", "--variant", fp32.id, "--artifact", fp32.path,
                   "--sha256", fp32.sha256)
    assert rc == 0 and Path(doc["path"]).is_file()
    assert call(agent, "status", "--workdir", w)[1]["models"]["m"]["current"] is None, "install alone switches nothing"

    assert call(agent, "activate", "--workdir", w, "--model", "m", "--variant", fp32.id)[1]["models"]["m"]["current"] == fp32.id
    call(agent, "install", "--workdir", w, "--model", "m", "--variant", int8.id, "--artifact", int8.path,
         "--sha256", int8.sha256)
    status = call(agent, "activate", "--workdir", w, "--model", "m", "--variant", int8.id)[1]["models"]["m"]
    assert (status["current"], status["previous"]) == (int8.id, fp32.id)
    assert status["path"].endswith(f"{int8.id}/model.onnx")

    status = call(agent, "rollback", "--workdir", w, "--model", "m")[1]["models"]["m"]
    assert (status["current"], status["previous"]) == (fp32.id, int8.id)
    assert os.readlink(tmp_path / "device/deployments/m/current") == fp32.id


def test_install_refuses_unsafe_names_and_corrupt_sources(agent, built, tmp_path):
    _, variants = built
    v = variants["onnx:fp32"]
    w = str(tmp_path / "device")
    rc, doc = call(agent, "install", "--workdir", w, "--model", "../../etc", "--variant", v.id,
                   "--artifact", v.path, "--sha256", v.sha256)
    assert rc != 0 and doc["error"]["kind"] == "bad_request"
    rc, doc = call(agent, "install", "--workdir", w, "--model", "m", "--variant", "x; rm -rf ~",
                   "--artifact", v.path, "--sha256", v.sha256)
    assert rc != 0 and doc["error"]["kind"] == "bad_request"
    rc, doc = call(agent, "install", "--workdir", w, "--model", "m", "--variant", v.id,
                   "--artifact", v.path, "--sha256", "0" * 64)
    assert rc != 0 and doc["error"]["kind"] == "artifact_corrupt"
    assert not (tmp_path / "device/deployments/m").exists() or not any((tmp_path / "device/deployments/m").iterdir())
    rc, doc = call(agent, "rollback", "--workdir", w, "--model", "m")
    assert rc != 0 and doc["error"]["kind"] == "no_deployment"


def test_install_where_a_file_blocks_the_workdir(agent, built, tmp_path):
    _, variants = built
    v = variants["onnx:fp32"]
    (tmp_path / "device").write_text("a file where the workdir should be")
    rc, doc = call(agent, "install", "--workdir", str(tmp_path / "device"), "--model", "m", "--variant", v.id,
                   "--artifact", v.path, "--sha256", v.sha256)
    assert rc != 0 and doc["error"]["kind"] in ("bad_request", "internal")
    assert "device" in doc["error"]["message"]
