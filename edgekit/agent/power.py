"""Power sensors: find the board's own meter and read the board total in watts.

Every file is read under a configurable root (default "/") so tests point discovery at trees
built from real captures; command sensors (vcgencmd, tegrastats, termux-battery-status) run the
command found on PATH. Each sensor says which rail makes its total and what the total leaves out.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import threading
from typing import Callable, Dict, List, Optional, Tuple

# Rails that carry the whole board's input when a board has one (Orin Nano/NX, Xavier NX, TX2: VDD_IN;
# Nano JP4: POM_5V_IN). AGX boards have none: their total is the sum of the rails.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
SKIP_LABELS = ("NC", "sum of shunt voltages")


class Unavailable(Exception):
    """This sensor is not here, or cannot be read; the message says why."""


def under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def read_text(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace").strip()


def read_opt(path: str) -> Optional[str]:
    try:
        return read_text(path)
    except OSError:
        return None


def run_command(argv: List[str], timeout: float = 5.0) -> str:
    """stdout of a device command; Unavailable when it is missing or fails."""
    exe = shutil.which(argv[0])
    if exe is None:
        raise Unavailable("{} not on PATH".format(argv[0]))
    try:
        proc = subprocess.run([exe] + argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable("{} failed: {}".format(" ".join(argv), exc))
    if proc.returncode != 0:
        err = " ".join(proc.stderr.decode("utf-8", "replace").split())[:200]
        raise Unavailable("{} exited {}: {}".format(" ".join(argv), proc.returncode, err))
    return proc.stdout.decode("utf-8", "replace")


def board_total(rails: Dict[str, float]) -> Tuple[float, str]:
    """(watts, rail name): the input rail when the board has one, otherwise the sum of rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], name
    return sum(rails.values()), "sum(" + ",".join(sorted(rails)) + ")"


class Sensor:
    """One meter. `read()` gives (board total, {rail: value}); watts, or joules when `counter`."""

    name = ""
    counter = False  # True: read() returns a cumulative energy in joules (RAPL)
    min_interval_s = 0.05

    def __init__(self, source: str) -> None:
        self.source = source
        self.rail = ""
        self.notes: List[str] = []

    def read(self) -> Tuple[float, Dict[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"name": self.name, "rail": self.rail, "source": self.source, "notes": list(self.notes)}


# --------------------------------------------------------------------------- Jetson INA3221


class JetsonHwmon(Sensor):
    """JetPack 5/6: ina3221 hwmon, power = bus mV x mA per channel (the driver exports no power)."""

    name = "jetson-ina3221-hwmon"

    def __init__(self, dirs: List[str]) -> None:
        super().__init__(",".join(dirs))
        self.channels: List[Tuple[str, str, str]] = []  # (label, in*_input, curr*_input)
        for d in dirs:
            for label_file in sorted(glob.glob(os.path.join(d, "in*_label"))):
                n = os.path.basename(label_file)[2:-len("_label")]
                label = read_opt(label_file)
                if label is None or label in SKIP_LABELS or not n.isdigit():
                    continue
                volt, curr = os.path.join(d, "in{}_input".format(n)), os.path.join(d, "curr{}_input".format(n))
                try:  # a disabled channel answers -ENODATA: leave it out, say so
                    float(read_text(volt)), float(read_text(curr))
                except (OSError, ValueError) as exc:
                    self.notes.append("skipped {} ({}): {}".format(label, volt, exc.__class__.__name__))
                    continue
                self.channels.append((label, volt, curr))
        if not self.channels:
            raise Unavailable("ina3221 hwmon at {} has no readable channel".format(self.source))
        _, self.rail = board_total({label: 0.0 for label, _, _ in self.channels})

    def read(self):
        rails = {label: float(read_text(v)) * float(read_text(c)) / 1e6 for label, v, c in self.channels}
        return board_total(rails)[0], rails


def find_jetson_hwmon(root: str) -> Sensor:
    dirs = set()
    for pattern in ("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*", "sys/class/hwmon/hwmon*"):
        for d in glob.glob(under(root, pattern)):
            if read_opt(os.path.join(d, "name")) == "ina3221":
                dirs.add(os.path.realpath(d))
    if not dirs:
        raise Unavailable("no ina3221 hwmon (Jetson JetPack 5/6)")
    return JetsonHwmon(sorted(dirs))


class JetsonIio(Sensor):
    """JetPack 4: the downstream ina3221x IIO driver exports in_powerN_input in mW."""

    name = "jetson-ina3221x-iio"

    def __init__(self, dirs: List[str]) -> None:
        super().__init__(",".join(dirs))
        self.channels: List[Tuple[str, str]] = []
        for d in dirs:
            for name_file in sorted(glob.glob(os.path.join(d, "rail_name_*"))):
                n = name_file.rsplit("_", 1)[1]
                label = read_opt(name_file)
                path = os.path.join(d, "in_power{}_input".format(n))
                if not label or label in SKIP_LABELS:
                    continue
                try:
                    float(read_text(path))
                except (OSError, ValueError) as exc:
                    self.notes.append("skipped {} ({}): {}".format(label, path, exc.__class__.__name__))
                    continue
                self.channels.append((label, path))
        if not self.channels:
            raise Unavailable("ina3221x IIO at {} has no readable channel".format(self.source))
        _, self.rail = board_total({label: 0.0 for label, _ in self.channels})

    def read(self):
        rails = {label: float(read_text(p)) / 1000.0 for label, p in self.channels}
        return board_total(rails)[0], rails


def find_jetson_iio(root: str) -> Sensor:
    dirs = sorted(glob.glob(under(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*")))
    if not dirs:
        raise Unavailable("no ina3221x IIO device (Jetson JetPack 4)")
    return JetsonIio(dirs)


# --------------------------------------------------------------------------- tegrastats

# "VDD_IN 4742mW/4742mW" (JP5/6), "POM_5V_IN 933/933" (JP4), and three values cur/avg/max.
_TEGRA_RAIL = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")


def parse_tegrastats(line: str) -> Dict[str, float]:
    """{rail: current watts} from one tegrastats line; RAM/SWAP pairs and NC rails are left out."""
    rails = {}
    for m in _TEGRA_RAIL.finditer(line):
        if m.group(1) in SKIP_LABELS or m.group(1) in ("RAM", "SWAP", "IRAM"):
            continue
        rails[m.group(1)] = int(m.group(2)) / 1000.0
    return rails


class Tegrastats(Sensor):
    """Fallback when no INA3221 file is readable: `tegrastats --interval MS`, latest line wins."""

    name = "tegrastats"

    def __init__(self, exe: str, interval_ms: int = 100) -> None:
        super().__init__(exe)
        self.min_interval_s = interval_ms / 1000.0
        self.proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, universal_newlines=True)
        self.latest: Dict[str, float] = {}
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="tegrastats", daemon=True)
        self.thread.start()
        if not self.ready.wait(max(2.0, 5 * self.min_interval_s)):
            self.close()
            raise Unavailable("tegrastats printed no power rails")
        _, self.rail = board_total(self.latest)
        self.notes.append("parsed from tegrastats output every {} ms (its own averaging)".format(interval_ms))

    def _pump(self) -> None:
        for line in self.proc.stdout:
            rails = parse_tegrastats(line)
            if rails:
                self.latest = rails
                self.ready.set()

    def read(self):
        rails = dict(self.latest)
        return board_total(rails)[0], rails

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def find_tegrastats(root: str) -> Sensor:
    exe = shutil.which("tegrastats")
    if exe is None:
        raise Unavailable("tegrastats not on PATH")
    return Tegrastats(exe)


# --------------------------------------------------------------------------- Raspberry Pi 5 PMIC

_PMIC_A = re.compile(r"^\s*(\S+)_A current\(\d+\)=([-\d.eE+]+)A\s*$")
_PMIC_V = re.compile(r"^\s*(\S+)_V volt\(\d+\)=([-\d.eE+]+)V\s*$")


def parse_pmic(text: str) -> Tuple[Dict[str, float], List[str]]:
    """({rail: watts}, [voltage-only rails]) pairing `X_A current(n)` with `X_V volt(m)` by name."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = _PMIC_A.match(line)
        if m:
            amps[m.group(1)] = float(m.group(2))
            continue
        m = _PMIC_V.match(line)
        if m:
            volts[m.group(1)] = float(m.group(2))
    rails = {name: amps[name] * volts[name] for name in amps if name in volts}
    return rails, sorted(set(volts) - set(amps))


class PiPmic(Sensor):
    """Raspberry Pi 5: `vcgencmd pmic_read_adc`, the raw sum of V x I over the current-sensed rails."""

    name = "rpi5-pmic"
    min_interval_s = 0.1  # each read costs ~23 ms of firmware ADC time and a process

    def __init__(self) -> None:
        super().__init__("vcgencmd pmic_read_adc")
        rails, voltage_only = parse_pmic(run_command(["vcgencmd", "pmic_read_adc"]))
        if not rails:
            raise Unavailable("vcgencmd pmic_read_adc printed no current/voltage pairs (not a Pi 5?)")
        self.rail = "sum({} PMIC rails)".format(len(rails))
        self.notes.append("raw sum of V x I over the PMIC rails; excludes {} (voltage only, no current sense), "
                          "5 V loads fed from EXT5V (USB, fan) and PMIC conversion losses"
                          .format(", ".join(voltage_only) or "nothing"))
        self.notes.append("each read runs vcgencmd (~23 ms of firmware ADC time): sampling itself costs CPU")

    def read(self):
        rails, _ = parse_pmic(run_command(["vcgencmd", "pmic_read_adc"]))
        return sum(rails.values()), rails


def find_pi_pmic(root: str) -> Sensor:
    return PiPmic()


# --------------------------------------------------------------------------- Android


def battery_power(current: float, voltage: float, status: str) -> Tuple[float, List[str]]:
    """Watts drawn from the battery, normalising vendor units and sign; notes say what was assumed.

    ABI: current_now in uA (negative while discharging), voltage_now in uV. Vendors report mA / mV
    and either sign; a phone running a model draws well over 10 mA, so |I| < 10000 means mA.
    """
    notes = []
    if abs(voltage) < 100000:  # 3-5 V in uV is millions; in mV thousands
        notes.append("voltage looked like mV ({:g}); scaled to uV".format(voltage))
        voltage *= 1000.0
    if 0 < abs(current) < 10000:
        notes.append("current looked like mA ({:g}); scaled to uA".format(current))
        current *= 1000.0
    status = status.strip().lower()
    if status == "discharging" and current > 0:
        notes.append("vendor reports discharge current as positive (ABI: negative)")
    elif status == "charging" and current < 0:
        notes.append("vendor reports charge current as negative while charging")
    if status in ("charging", "full", "not charging", "not_charging"):
        notes.append("battery is {}: external power feeds the device, so battery current understates "
                     "its draw; unplug for energy figures".format(status))
    return abs(current) * abs(voltage) / 1e12, notes


class AndroidBattery(Sensor):
    name = "android-power-supply"

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.rail = "battery"
        try:
            self.read()
        except PermissionError:
            raise Unavailable("permission denied reading {}/current_now (Android SELinux denies untrusted apps "
                              "such as Termux; run the agent from adb shell or as root)".format(base))
        except (OSError, ValueError) as exc:
            raise Unavailable("cannot read {}: {}".format(base, exc))

    def read(self):
        current = float(read_text(os.path.join(self.source, "current_now")))
        voltage = float(read_text(os.path.join(self.source, "voltage_now")))
        status = read_opt(os.path.join(self.source, "status")) or "Unknown"
        watts, notes = battery_power(current, voltage, status)
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
        return watts, {"battery": watts}


def find_android(root: str) -> Sensor:
    base = under(root, "sys/class/power_supply/battery")
    if not os.path.isdir(base):
        raise Unavailable("no /sys/class/power_supply/battery (Android)")
    return AndroidBattery(base)


def parse_termux(text: str) -> Tuple[float, Optional[float], str]:
    """(current, voltage or None, status) from `termux-battery-status` JSON."""
    doc = json.loads(text)
    voltage = doc.get("voltage")
    return float(doc["current"]), None if voltage is None else float(voltage), str(doc.get("status", "Unknown"))


class TermuxBattery(Sensor):
    name = "termux-battery-status"
    min_interval_s = 0.5  # each read starts an Android activity

    def __init__(self, voltage_file: Optional[str]) -> None:
        super().__init__("termux-battery-status")
        self.rail = "battery"
        self.voltage_file = voltage_file
        self.read()

    def read(self):
        try:
            current, voltage, status = parse_termux(run_command(["termux-battery-status"], timeout=10))
        except (ValueError, KeyError) as exc:
            raise Unavailable("termux-battery-status output not understood: {}".format(exc))
        if voltage is None and self.voltage_file:
            voltage = read_opt(self.voltage_file)
            voltage = float(voltage) if voltage else None
        if voltage is None:
            raise Unavailable("termux-battery-status reports current but no voltage on this device, and "
                              "voltage_now is not readable: power cannot be computed")
        watts, notes = battery_power(current, voltage, status)
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
        return watts, {"battery": watts}


def find_termux(root: str) -> Sensor:
    return TermuxBattery(under(root, "sys/class/power_supply/battery/voltage_now"))


# --------------------------------------------------------------------------- RAPL


class Rapl(Sensor):
    """Intel/AMD RAPL energy counters (microjoules, wrapping at max_energy_range_uj)."""

    name = "rapl"
    counter = True
    min_interval_s = 0.05

    def __init__(self, zones: Dict[str, str]) -> None:
        super().__init__(",".join(sorted(zones.values())))
        # psys covers the platform; otherwise packages plus DRAM (core/uncore are inside the package).
        chosen = {"psys": zones["psys"]} if "psys" in zones else zones
        self.zones = chosen
        self.rail = "psys" if "psys" in zones else "sum(" + ",".join(sorted(chosen)) + ")"
        self.ranges = {}
        for name, d in chosen.items():
            value = read_opt(os.path.join(d, "max_energy_range_uj"))
            self.ranges[name] = float(value) if value else None
        self.last: Dict[str, float] = {}
        self.total: Dict[str, float] = {name: 0.0 for name in chosen}
        try:
            self.read()
        except PermissionError:
            raise Unavailable("unavailable: energy_uj is root-only (Linux >= 5.10, CVE-2020-8694); run the agent "
                              "as root or chmod o+r the energy_uj files")

    def read(self):
        for name, d in self.zones.items():
            raw = float(read_text(os.path.join(d, "energy_uj")))
            if name in self.last:
                delta = raw - self.last[name]
                if delta < 0:
                    rng = self.ranges[name]
                    if rng:
                        delta += rng
                        if "counter wrapped" not in self.notes:
                            self.notes.append("counter wrapped")
                    else:
                        delta = 0.0
                self.total[name] += delta / 1e6
            self.last[name] = raw
        return sum(self.total.values()), dict(self.total)


def find_rapl(root: str) -> Sensor:
    zones = {}
    for pattern in ("sys/class/powercap/intel-rapl:*", "sys/devices/virtual/powercap/intel-rapl/intel-rapl:*"):
        for d in sorted(glob.glob(under(root, pattern))):
            if re.search(r"intel-rapl:\d+$", d):
                name = read_opt(os.path.join(d, "name"))
                if name and name not in zones:
                    zones[name] = d
    if not zones:
        raise Unavailable("no RAPL powercap zones")
    return Rapl(zones)


# --------------------------------------------------------------------------- NVML


class Nvml(Sensor):
    """Discrete NVIDIA GPUs through nvidia-ml-py: board power of each GPU (not the host's)."""

    name = "nvml"

    def __init__(self) -> None:
        super().__init__("nvml")
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            raise Unavailable("nvidia-ml-py is not installed")
        try:
            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # NVMLError_* when there is no driver
            raise Unavailable("NVML: {}".format(exc))
        if not self.handles:
            raise Unavailable("NVML found no GPU")
        self.nvml = pynvml
        self.rail = "sum(" + ",".join("gpu{}".format(i) for i in range(len(self.handles))) + ")"
        self.notes.append("GPU board power only: the host CPU and memory are not included")
        self.read()

    def read(self):
        rails = {"gpu{}".format(i): self.nvml.nvmlDeviceGetPowerUsage(h) / 1000.0 for i, h in enumerate(self.handles)}
        return sum(rails.values()), rails

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


def find_nvml(root: str) -> Sensor:
    return Nvml()


# Board meters first: a Jetson fixture tree must not be read as the host's GPU or CPU package.
FINDERS: List[Tuple[str, Callable[[str], Sensor]]] = [
    ("jetson-ina3221-hwmon", find_jetson_hwmon),
    ("jetson-ina3221x-iio", find_jetson_iio),
    ("tegrastats", find_tegrastats),
    ("rpi5-pmic", find_pi_pmic),
    ("android-power-supply", find_android),
    ("termux-battery-status", find_termux),
    ("nvml", find_nvml),
    ("rapl", find_rapl),
]
NAMES = tuple(name for name, _ in FINDERS)


def discover(root: str = "/", want: str = "auto") -> Tuple[Optional[Sensor], List[str]]:
    """(first sensor that reads, reasons the others did not). `want`: auto, off or a sensor name."""
    if want == "off":
        return None, ["power measurement disabled (--power off)"]
    reasons = []
    for name, finder in FINDERS:
        if want not in ("auto", name):
            continue
        try:
            return finder(root), reasons
        except Unavailable as exc:
            reasons.append("{}: {}".format(name, exc))
        except Exception as exc:  # a sensor we cannot parse must not stop the benchmark
            reasons.append("{}: {}: {}".format(name, type(exc).__name__, " ".join(str(exc).split())[:200]))
    if want not in ("auto",) + NAMES:
        reasons.append("unknown sensor {!r}; known: {}".format(want, ", ".join(NAMES)))
    return None, reasons


def found(root: str = "/") -> dict:
    """For probe: the sensor bench would use, or why there is none. Cheap: command sensors read once."""
    sensor, reasons = discover(root)
    try:
        if sensor is None:
            return {"available": False, "reason": "; ".join(reasons)}
        doc = sensor.describe()
        doc["available"] = True
        return doc
    finally:
        if sensor is not None:
            sensor.close()
