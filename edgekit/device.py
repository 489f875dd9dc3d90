"""A target plus a transport: everything the host asks of a device goes through the agent here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import agent_zipapp
from .errors import DeviceError, UsageError
from .spec import BenchSettings, Target, Variant, default_python
from .transport import Transport, remote_path

# What the user should do about each agent error kind.
FIXES = {
    "runtime_missing": "install the runtime on the device, or drop its recipes from the profile",
    "artifact_corrupt": "run again: the artifact is pushed afresh",
    "artifact_missing": "run again: the artifact is pushed afresh",
    "load_failed": "the runtime on the device cannot read this artifact; check its version against the host's",
    "out_of_memory": "choose a smaller variant or free memory on the device",
    "disk_full": "free space on the device or point the target's workdir elsewhere",
    "no_deployment": "deploy a variant first with edgekit deploy",
}


def connect(target: Target) -> Device:
    if target.transport == "local":
        from .transport.local import LocalTransport

        return Device(target, LocalTransport())
    raise UsageError(f"target {target.name}: the ssh transport is not available in this version. "
                     f"Fix: use --target local")


class Device:
    def __init__(self, target: Target, transport: Transport) -> None:
        self.target = target
        self.transport = transport
        self.python = default_python(target)
        _, digest = agent_zipapp()
        self.agent_path = remote_path(target.workdir, "agent", f"edgekit-agent-{digest[:16]}.pyz")
        self._agent_ready = False

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ agent calls

    def ensure_agent(self) -> None:
        """Push the agent once per version; then check this Python can run it."""
        if self._agent_ready:
            return
        if not self.transport.exists(self.agent_path):
            data, _ = agent_zipapp()
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "edgekit-agent.pyz"
                local.write_bytes(data)
                self.transport.put(str(local), self.agent_path)
        done = self.transport.run([self.python, self.agent_path, "version"], timeout=60)
        if done.returncode != 0:
            version = self.transport.run([self.python, "-V"], timeout=30)
            found = (version.stdout or version.stderr).strip() or f"no {self.python}"
            raise DeviceError(f"target {self.target.name}: the agent needs Python >= 3.8 with numpy; "
                              f"{self.python} gave: {found} ({_last_line(done.stderr)}). "
                              f"Fix: set python in {self.target.source or 'the target file'} to a newer interpreter",
                              kind="python_unsupported")
        self._agent_ready = True

    def agent(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        self.ensure_agent()
        done = self.transport.run([self.python, self.agent_path, *args], timeout=timeout)
        doc = _parse(done.stdout)
        if doc is None:
            raise DeviceError(f"target {self.target.name}: the agent exited {done.returncode} without a result "
                              f"({_last_line(done.stderr) or 'no output'})", kind="agent_crashed")
        if "error" in doc:
            kind, message = doc["error"].get("kind", "internal"), doc["error"].get("message", "")
            fix = FIXES.get(kind)
            raise DeviceError(f"target {self.target.name}: {message}" + (f". Fix: {fix}" if fix else ""), kind=kind)
        return doc

    def probe(self) -> dict[str, Any]:
        args = ["probe"] + (["--root", self.target.sensor_root] if self.target.sensor_root else [])
        return self.agent(*args, timeout=60)

    def push(self, variant: Variant) -> str:
        """The artifact's path on the device, uploading only when it is not there yet.

        Whether a present file is intact is the agent's job: every command that uses an
        artifact verifies its sha256 first.
        """
        remote = remote_path(self.target.workdir, "artifacts", variant.sha256, variant.file)
        if not self.transport.exists(remote):
            self.transport.put(variant.path, remote)
        return remote

    def bench(self, variant: Variant, remote: str, settings: BenchSettings) -> dict[str, Any]:
        return self.agent("bench", "--artifact", remote, "--runtime", variant.runtime, "--sha256", variant.sha256,
                          "--warmup-s", str(settings.warmup_s), "--min-runs", str(settings.min_runs),
                          "--min-s", str(settings.min_s), "--max-s", str(settings.max_s),
                          "--threads", str(settings.threads), "--max-runs", str(settings.max_runs),
                          *self._bench_extras(settings),
                          timeout=2 * settings.max_s + 120 + (300 if settings.cooldown_c is not None else 0))

    def _bench_extras(self, settings: BenchSettings) -> list[str]:
        """Power, cooldown and rate options, and the target's sensor root and power sensor."""
        power = settings.power if settings.power != "auto" else (self.target.power or "auto")
        extras = ["--power", power]
        if self.target.sensor_root:
            extras += ["--root", self.target.sensor_root]
        if settings.cooldown_c is not None:
            extras += ["--cooldown-c", str(settings.cooldown_c)]
        if settings.rate_hz:
            extras += ["--rate-hz", str(settings.rate_hz)]
        return extras

    def run(self, variant: Variant, remote: str, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
        """The artifact's first output for each batch, computed on the device."""
        stacked = {name: np.stack([b[name] for b in batches]) for name in batches[0]}
        tag = f"{os.getpid()}-{variant.sha256[:12]}"
        remote_in = remote_path(self.target.workdir, "tmp", f"in-{tag}.npz")
        remote_out = remote_path(self.target.workdir, "tmp", f"out-{tag}.npz")
        with tempfile.TemporaryDirectory() as tmp:
            local_in, local_out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(local_in, **stacked)
            self.transport.put(str(local_in), remote_in)
            self.agent("run", "--artifact", remote, "--runtime", variant.runtime, "--sha256", variant.sha256,
                       "--inputs", remote_in, "--outputs", remote_out, timeout=600)
            self.transport.get(remote_out, str(local_out))
            with np.load(local_out) as out:
                first = out["output_0"]
        return first.reshape(-1, *first.shape[2:])

    def install(self, variant: Variant, remote: str) -> dict[str, Any]:
        meta = json.dumps({"recipe": variant.recipe, "format": variant.format, "precision": variant.precision,
                           "runtime": variant.runtime, "inputs": variant.inputs})
        return self.agent("install", "--workdir", self.target.workdir, "--model", variant.model,
                          "--variant", variant.id, "--artifact", remote, "--sha256", variant.sha256, "--meta", meta)

    def activate(self, model: str, variant_id: str) -> dict[str, Any]:
        return self.agent("activate", "--workdir", self.target.workdir, "--model", model, "--variant", variant_id)

    def rollback(self, model: str) -> dict[str, Any]:
        return self.agent("rollback", "--workdir", self.target.workdir, "--model", model)

    def status(self, model: str | None = None) -> dict[str, Any]:
        args = ["status", "--workdir", self.target.workdir] + (["--model", model] if model else [])
        return self.agent(*args)


def _parse(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("schema") == 1:
            return doc
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
