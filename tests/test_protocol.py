"""The protocol's two sides agree: a bench request survives the trip through the agent's own
parser field for field, and every error kind the agent documents has the host's fix beside it."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.agent import cli as agent_cli
from edgekit.agent.protocol import KINDS, AgentError, BenchRequest, error_doc
from edgekit.device import FIXES, Device
from edgekit.settings import BenchSettings, Target
from edgekit.records import Variant

# Values a request can carry: what argparse reads back equal, as the agent sees it on the device.
paths = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)
floats = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=0, max_value=10**9)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(artifact=paths, runtime=st.sampled_from(["onnxruntime", "tflite", "torchscript"]), sha256=st.none() | paths,
       inputs=st.none() | paths, warmup_s=floats, min_runs=ints, min_s=floats, max_s=floats, threads=ints,
       max_runs=ints, root=paths, power=st.sampled_from(["auto", "off", "rapl"]), cooldown_c=st.none() | floats,
       warmup_max_s=st.none() | floats, rate_hz=st.none() | floats.filter(bool), provider=st.sampled_from(["auto", "cpu"]))
def test_a_bench_request_reads_back_as_sent(**fields):
    request = BenchRequest(**fields)
    argv = request.to_argv()
    assert argv[0] == "bench"
    parsed = agent_cli._parser().parse_args(argv)
    assert BenchRequest.from_args(parsed) == request


def test_every_field_is_an_agent_option():
    """A field the agent's parser does not know would make every bench a bad_request."""
    full = BenchRequest(**{f.name: (1.5 if f.type in ("float", "Optional[float]") else
                                    2 if f.type == "int" else "x")
                           for f in dataclasses.fields(BenchRequest)})
    assert BenchRequest.from_args(agent_cli._parser().parse_args(full.to_argv())) == full


def test_the_host_builds_the_request_from_the_profile_and_the_target():
    target = Target(name="orin", transport="local", power="jetson-ina3221-hwmon", sensor_root="/fixtures/orin")
    device = Device.__new__(Device)
    device.target = target
    variant = Variant(id="v", recipe="onnx:fp32", format="onnx", precision="fp32", runtime="onnxruntime", model="m",
                      sha256="ab" * 32)
    req = device.bench_request(variant, "/w/a.onnx", BenchSettings(cooldown_c=50.0, rate_hz=30.0, max_runs=300),
                               "/w/in.npz")
    assert (req.artifact, req.runtime, req.sha256, req.inputs) == ("/w/a.onnx", "onnxruntime", "ab" * 32, "/w/in.npz")
    assert (req.power, req.root, req.cooldown_c, req.rate_hz, req.max_runs) == \
           ("jetson-ina3221-hwmon", "/fixtures/orin", 50.0, 30.0, 300)
    assert device.bench_request(variant, "/a", BenchSettings(power="off")).power == "off"  # the profile wins
    plain = Device.__new__(Device)
    plain.target = Target(name="pi", transport="local")
    req = plain.bench_request(variant, "/a", BenchSettings())
    assert (req.power, req.root, req.rate_hz, req.cooldown_c, req.inputs) == ("auto", "/", None, None, None)
    assert "--rate-hz" not in req.to_argv() and "--inputs" not in req.to_argv()


def test_every_agent_error_kind_has_the_hosts_fix():
    missing = [k for k in KINDS if not FIXES.get(k)]
    assert not missing, f"agent error kinds with no fix on the host: {missing}"
    host_only = set(FIXES) - set(KINDS)
    assert host_only == {"bad_document", "bad_output"}, "the host's own verdicts on a document"


def test_an_undocumented_kind_cannot_be_raised_or_sent():
    import pytest

    with pytest.raises(AssertionError):
        AgentError("something_else", "x")
    assert error_doc("busy", "held")["error"] == {"kind": "busy", "message": "held"}


def test_a_probe_is_read_by_name_from_the_real_agents_document(tmp_path):
    """The real agent's probe of this machine, read as the host reads it; another schema or command
    is refused by the record itself."""
    import json
    import subprocess
    import sys

    import pytest

    from edgekit.agent.protocol import Probe
    from edgekit.bundle import write_agent
    from edgekit.documents import validate

    agent = write_agent(tmp_path / "agent.pyz")
    doc = json.loads(subprocess.run([sys.executable, str(agent), "probe"], capture_output=True, text=True,
                                    timeout=120, check=True).stdout)
    probe = Probe.from_dict(validate("probe", doc, "here"))
    assert probe.arch == doc["arch"] and probe.cores == doc["cores"]["usable"] and probe.numpy == doc["numpy"]
    assert probe.isa == tuple(doc["cpu"]["isa"]) and probe.python == doc["python"]["version"]
    assert probe.usable("onnxruntime") and not probe.usable("no-such-runtime") and probe.doc is doc
    assert probe.emulated is False
    for bad in ({**doc, "schema": 2}, {**doc, "command": "bench"}, [doc]):
        with pytest.raises(ValueError, match="not a schema-1 probe"):
            Probe.from_dict(bad)
