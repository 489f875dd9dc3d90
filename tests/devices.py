"""Real SSH test devices: one OpenSSH `sshd` per device, each a persona with its own user, Python,
sensors, cores and home, all on loopback addresses.

How a device is built (facts in ARCHITECTURE.md, "Tests"):
- `sshd -D -e -f ABS_CONFIG` runs in the foreground under our control, on its own 127.x.y.z
  address, with a fresh host key and a fresh client key per device.
- It runs in a private mount namespace (`unshare -m`): there `/root` is replaced by a tmpfs that
  holds only `/root/.pyenv` (so the device user can run the machine's pyenv Pythons without any
  permission change on the host), `/home` is a tmpfs and the device user's home is a bind mount
  of a folder the test can inspect. Everything disappears with the namespace.
- The persona's user is created once with `useradd` (the tests run as root) and unlocked with
  `usermod -p '*'` because `UsePAM no` treats `!` accounts as locked.
- `taskset` limits a persona's cores: every process the device starts inherits the affinity.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

SSHD = "/usr/sbin/sshd"
HOST_VENV_SITE = Path(sysconfig.get_paths()["purelib"])


def pyenv_python(version: str) -> str | None:
    """A pyenv interpreter of this minor version, if the machine has one."""
    found = sorted(glob.glob(f"/root/.pyenv/versions/{version}*/bin/python{version}"))
    return found[-1] if found else None


# --------------------------------------------------------------------------- sensor trees


# Source: a real `head -n1 /etc/nv_tegra_release` on an Orin Nano dev kit, JetPack 6 (L4T 36.4.7),
# quoted in a public report (repository not identified).
NV_TEGRA_RELEASE_JP6 = ("# R36 (release), REVISION: 4.7, GCID: 42132812, BOARD: generic, EABI: aarch64, "
                        "DATE: Thu Sep 18 22:54:44 UTC 2025\n# KERNEL_VARIANT: oot\n")

# Source: ../shared/fixtures/devices/jetson_orin_hwmon_tree.txt (Orin Nano INA3221 hwmon layout and the
# illustrative values given there, consistent with the real tegrastats line (b) of tegrastats_orin_nano.txt).
ORIN_NANO_INA3221 = {
    "name": "ina3221",
    "in1_label": "VDD_IN", "in2_label": "VDD_CPU_GPU_CV", "in3_label": "VDD_SOC",
    "in1_input": "5064", "in2_input": "5056", "in3_input": "5056",
    "curr1_input": "936", "curr2_input": "96", "curr3_input": "288",
    "in7_label": "sum of shunt voltages",
    "shunt1_resistor": "5000", "shunt2_resistor": "5000", "shunt3_resistor": "5000",
}

# Source: ../shared/fixtures/devices/android_battery_samples.txt (power_supply units: current_now in
# microamps, voltage_now in microvolts, status strings as documented there).
ANDROID_BATTERY = {"type": "Battery", "status": "Discharging", "capacity": "81",
                   "voltage_now": "4012000", "current_now": "-412000"}


def _tree_base(root: Path) -> None:
    """What every sensor root needs: the live /proc and cgroup files (the agent reads both under the root)."""
    (root / "sys" / "fs").mkdir(parents=True, exist_ok=True)
    os.symlink("/proc", root / "proc")
    os.symlink("/sys/fs/cgroup", root / "sys" / "fs" / "cgroup")
    (root / "etc").mkdir(exist_ok=True)
    shutil.copyfile("/etc/os-release", root / "etc" / "os-release")


def jetson_tree(root: Path) -> None:
    _tree_base(root)
    (root / "etc" / "nv_tegra_release").write_text(NV_TEGRA_RELEASE_JP6)
    (root / "proc-device-tree").mkdir()
    chip = root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / "1-0040"
    hwmon = chip / "hwmon" / "hwmon1"
    hwmon.mkdir(parents=True)
    (chip / "name").write_text("ina3221\n")
    for name, value in ORIN_NANO_INA3221.items():
        (hwmon / name).write_text(value + "\n")


def phone_tree(root: Path) -> None:
    _tree_base(root)
    battery = root / "sys" / "class" / "power_supply" / "battery"
    battery.mkdir(parents=True)
    for name, value in ANDROID_BATTERY.items():
        (battery / name).write_text(value + "\n")


def plain_tree(root: Path) -> None:
    _tree_base(root)


# --------------------------------------------------------------------------- personas


@dataclass(frozen=True)
class Persona:
    name: str                      # also the ~/.ssh/config alias and the target name
    user: str
    python: str                    # "venv:all", "venv:numpy" or an interpreter path
    home: str = ""                 # login dir on the device; default /home/USER
    port: int = 0                  # 0: any free port
    cpus: str | None = None        # taskset list
    sensors: Callable[[Path], None] = plain_tree
    python_name: str = "bin/python"  # the interpreter's path inside a made venv
    own_sensor_root: bool = True   # False: the agent reads the device's own / (pi-arm's comes from its rootfs)

    @property
    def login_dir(self) -> str:
        return self.home or f"/home/{self.user}"


TERMUX_PREFIX = "/data/data/com.termux/files/usr"

PERSONAS = {
    "jetson-like": Persona("jetson-like", "ekd-jetson", "venv:all", sensors=jetson_tree),
    "pi-like": Persona("pi-like", "ekd-pi", "venv:numpy", cpus="1"),
    "phone-like": Persona("phone-like", "ekd-phone", "venv:all", home="/data/data/com.termux/files/home",
                          port=8022, sensors=phone_tree),
    "old-python": Persona("old-python", "ekd-oldpy", pyenv_python("3.8") or "/nonexistent/python3.8"),
    "ancient-python": Persona("ancient-python", "ekd-py36", pyenv_python("3.6") or "/nonexistent/python3.6"),
    # A Raspberry Pi 4's userland under qemu-aarch64 (scripts/build_arm_device.py): its python3 is
    # aarch64 Debian bookworm with aarch64 numpy/onnxruntime/ai-edge-litert, its /proc/cpuinfo and
    # device-tree model are a real Pi 4's (Cortex-A72, no asimddp). sshd and the shell stay native.
    "pi-arm": Persona("pi-arm", "ekd-piarm", "arm:pi4", own_sensor_root=False),
}

BUILD_ARM = Path(__file__).resolve().parent.parent / "scripts" / "build_arm_device.py"


def arm_python() -> str:
    """The pi-arm interpreter: the cached aarch64 userland, built on first use (about a minute)."""
    out = subprocess.run([sys.executable, str(BUILD_ARM)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/build_arm_device.py failed: {out.stderr.strip()[-1500:]}")
    return out.stdout.strip().splitlines()[-1]


def ensure_user(user: str, home: str) -> pwd.struct_passwd:
    """The persona's account: created once, unlocked for key logins, home as the persona says."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", home, "-s", "/bin/bash", user], check=True, capture_output=True)
        entry = pwd.getpwnam(user)
    if entry.pw_dir != home:
        subprocess.run(["usermod", "-d", home, user], check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
    return pwd.getpwnam(user)


_address_counter = [0]


def fresh_address() -> str:
    """A loopback address of its own per device, so fixed ports such as 8022 never collide."""
    _address_counter[0] += 1
    n = _address_counter[0]
    return f"127.{100 + os.getpid() % 100}.{(n // 250) % 250 + 1}.{n % 250 + 1}"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> str:
    """A fresh ed25519 key; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


class TestDevice:
    """One persona as a real SSH server. `start()`/`stop()`; `stop()` is safe to call twice."""

    __test__ = False  # not a pytest test class

    def __init__(self, persona: Persona, base: Path) -> None:
        self.persona = persona
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self.address = fresh_address()
        self.port = persona.port or free_port(self.address)
        self.home = base / "home"          # the device's login dir, as the host sees it
        self.sensor_root = base / "sensors"
        self.client_key = base / "client_key"
        self.host_key = base / "host_key"
        self.log = base / "sshd.log"
        self.proc: subprocess.Popen | None = None
        self.netns: str | None = None  # a network namespace to run sshd in (tests/links.py)
        self.user = ensure_user(persona.user, persona.login_dir)
        self._prepare()

    # ------------------------------------------------------------------ build

    def _prepare(self) -> None:
        p = self.persona
        self.home.mkdir(exist_ok=True)
        os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.home, 0o755)
        self.host_public = keygen(self.host_key, f"{p.name}-host")
        self.client_public = keygen(self.client_key, f"{p.name}-client")
        (self.base / "authorized_keys").write_text(self.client_public + "\n")
        os.chmod(self.base / "authorized_keys", 0o644)
        self.sensor_root.mkdir()
        p.sensors(self.sensor_root)
        self.python = self._make_python()
        self.path_dirs = [str(Path(self.python).parent)] if "/" in self.python else []
        self.config = self.base / "sshd_config"
        self.write_config()

    def _make_python(self) -> str:
        """The persona's interpreter as the device sees it."""
        p = self.persona
        if p.python == "arm:pi4":
            return arm_python()
        if not p.python.startswith("venv:"):
            return p.python
        if p.home.startswith("/data/data/com.termux/"):
            prefix_host = self.base / "termux-usr"
            prefix_device = TERMUX_PREFIX
        else:
            prefix_host = self.base / "python"
            prefix_device = str(prefix_host)
        base_python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base_python, "-m", "venv", "--without-pip", str(prefix_host)], check=True,
                       capture_output=True, timeout=120)
        site = Path(sysconfig.get_paths(vars={"base": str(prefix_host), "platbase": str(prefix_host)})["purelib"])
        if p.python == "venv:all":
            (site / "host-venv.pth").write_text(str(HOST_VENV_SITE) + "\n")
        else:  # numpy only (and LiteRT when the host has it): no onnxruntime on this device
            for pattern in ("numpy", "numpy.libs", "numpy-*.dist-info", "ai_edge_litert", "ai_edge_litert-*.dist-info",
                            "tflite_runtime", "tflite_runtime-*.dist-info"):
                for src in HOST_VENV_SITE.glob(pattern):
                    os.symlink(src, site / src.name)
        os.chmod(prefix_host, 0o755)
        return f"{prefix_device}/bin/python3"

    def write_config(self, extra: str = "") -> None:
        path = ":".join(self.path_dirs + ["/usr/local/bin", "/usr/bin", "/bin"])
        self.config.write_text(f"""\
Port {self.port}
ListenAddress {self.address}
HostKey {self.host_key}
PidFile {self.base / 'sshd.pid'}
AuthorizedKeysFile {self.base / 'authorized_keys'}
AllowUsers {self.persona.user}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
SetEnv PATH={path}
LogLevel VERBOSE
Subsystem sftp internal-sftp
{extra}
""")

    def _namespace_script(self) -> str:
        """Mounts that exist only for this device's processes, then sshd in the foreground."""
        user_home = self.persona.login_dir
        lines = ["set -e"]
        if os.path.isdir("/root/.pyenv"):
            stage = self.base / "mnt-pyenv"
            stage.mkdir(exist_ok=True)
            lines += [f"mount --bind /root/.pyenv {stage}",
                      "mount -t tmpfs -o mode=755 tmpfs /root",
                      "mkdir /root/.pyenv",
                      f"mount --move {stage} /root/.pyenv"]
        if user_home.startswith("/data/"):
            os.makedirs("/data", exist_ok=True)  # an empty mount point; the tree exists only in the namespace
            lines += ["mount -t tmpfs -o mode=755 tmpfs /data",
                      f"mkdir -p {user_home} {TERMUX_PREFIX}",
                      f"mount --bind {self.base / 'termux-usr'} {TERMUX_PREFIX}"]
        else:
            lines += ["mount -t tmpfs -o mode=755 tmpfs /home", f"mkdir -p {user_home}"]
        lines.append(f"mount --bind {self.home} {user_home}")
        sshd = [SSHD, "-D", "-e", "-f", str(self.config)]
        if self.persona.cpus:
            sshd = ["taskset", "-c", self.persona.cpus] + sshd
        lines.append("exec " + " ".join(sshd))
        return "\n".join(lines)

    # ------------------------------------------------------------------ run

    def start(self, timeout: float = 10.0) -> TestDevice:
        os.makedirs("/run/sshd", exist_ok=True)
        log = open(self.log, "ab")
        netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(netns + ["unshare", "-m", "--propagation", "private", "sh", "-c",
                                              self._namespace_script()],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd for {self.persona.name} exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd for {self.persona.name} did not listen on {self.address}:{self.port} "
                           f"within {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill sshd and every process it started (sessions call setsid, so walk the tree)."""
        if self.proc is None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=1)  # SIGKILL cannot be ignored; orphans are reaped by init
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def restart(self) -> TestDevice:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        """Processes this device started (descendants of its sshd)."""
        if self.proc is None:
            return []
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def live_commands(self) -> list[str]:
        """Command lines of this device's processes that still run. An exited child its parent
        has not reaped yet (a zombie) has no command line and is not running: it is left out."""
        out = []
        for proc in self.processes():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(" ".join(proc.cmdline()))
            except psutil.Error:  # it ended between the listing and the read
                continue
        return out

    # ------------------------------------------------------------------ host side

    @property
    def known_hosts_line(self) -> str:
        key_type, key = self.host_public.split()[:2]
        return f"[{self.address}]:{self.port} {key_type} {key}"

    def ssh_config(self, alias: str | None = None) -> str:
        return (f"Host {alias or self.persona.name}\n  HostName {self.address}\n  Port {self.port}\n"
                f"  User {self.persona.user}\n  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n")

    def target_toml(self, workdir: str = "~/.edgekit", alias: str | None = None, **extra: object) -> str:
        lines = [f'host = "{alias or self.persona.name}"', f'python = "{self.python}"', f'workdir = "{workdir}"',
                 "connect_timeout = 5"]
        if self.persona.own_sensor_root:
            lines.append(f'sensor_root = "{self.sensor_root}"')
        lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    def register(self, home: Path, project: Path, name: str | None = None, trust: bool = True,
                 **target: object) -> str:
        """Make the device known to the host at `home`: ~/.ssh/config alias, known_hosts, targets/NAME.toml."""
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        name = name or self.persona.name
        # The ssh alias is the persona's name unless that would hide another device's (or contains
        # characters ssh_config cannot hold): then the target's own name.
        alias = self.persona.name if name == self.persona.name or not name.replace("-", "").isalnum() else name
        with open(ssh / "config", "a") as fh:
            fh.write(self.ssh_config(alias))
        if trust:
            with open(ssh / "known_hosts", "a") as fh:
                fh.write(self.known_hosts_line + "\n")
        (project / "targets").mkdir(exist_ok=True)
        (project / "targets" / f"{name}.toml").write_text(self.target_toml(alias=alias, **target))
        return name

    def device_path(self, relative: str) -> Path:
        """A path under the device's login dir, as the host sees it."""
        return self.home / relative


def device_base(name: str) -> Path:
    """A folder the device user can traverse (pytest's tmp dirs are root-only)."""
    return Path(tempfile.mkdtemp(prefix=f"edgekit-dev-{name}-", dir="/tmp"))
