"""A background thread that samples one power sensor over exactly a window, and the energy sums.

`start()` and `stop()` each take a sample in the caller's thread, so the samples span the window
the caller timed; between them the thread samples every `interval_s`. Power sensors are
integrated with the trapezoid rule; energy counters (RAPL) are differenced.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Tuple

from .power import Sensor


class Window:
    """Samples of one window: [(t, total)], per-rail sums, errors."""

    def __init__(self, counter: bool) -> None:
        self.counter = counter
        self.samples: List[Tuple[float, float]] = []
        self.rails: List[Dict[str, float]] = []
        self.errors: List[str] = []

    @property
    def seconds(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if len(self.samples) > 1 else 0.0

    def energy_j(self) -> Optional[float]:
        s = self.samples
        if len(s) < 2:
            return None
        if self.counter:
            return s[-1][1] - s[0][1]
        return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(s, s[1:]))

    def powers(self) -> List[float]:
        """Instantaneous watts: the samples, or the counter's rate between samples."""
        if not self.counter:
            return [p for _, p in self.samples]
        return [(e1 - e0) / (t1 - t0) for (t0, e0), (t1, e1) in zip(self.samples, self.samples[1:]) if t1 > t0]

    def avg_w(self) -> Optional[float]:
        energy = self.energy_j()
        if energy is None or self.seconds <= 0:
            return None
        return energy / self.seconds

    def rail_avg_w(self) -> Dict[str, float]:
        if not self.rails:
            return {}
        if self.counter:
            if len(self.rails) < 2 or self.seconds <= 0:
                return {}
            return {k: (self.rails[-1][k] - self.rails[0].get(k, 0.0)) / self.seconds for k in self.rails[-1]}
        keys = self.rails[-1].keys()
        return {k: sum(r.get(k, 0.0) for r in self.rails) / len(self.rails) for k in keys}


class Sampler:
    def __init__(self, sensor: Sensor, interval_s: float = 0.05) -> None:
        self.sensor = sensor
        self.interval_s = max(interval_s, sensor.min_interval_s)
        self.window = Window(sensor.counter)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._closed = False

    def _sample(self, final: bool = False) -> None:
        t0 = time.perf_counter()
        try:
            total, rails = self.sensor.read()
        except Exception as exc:  # one bad read (a busy I2C bus) must not end the window
            with self._lock:
                if len(self.window.errors) < 10:
                    self.window.errors.append("{}: {}".format(type(exc).__name__, exc))
            return
        t = (t0 + time.perf_counter()) / 2.0  # the read's midpoint
        with self._lock:
            if self._closed:
                return
            self.window.samples.append((t, total))
            self.window.rails.append(rails)
            self._closed = final

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> "Sampler":
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="edgekit-power", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Window:
        """The closing sample is taken first, in the caller's thread, so the window ends now."""
        self._sample(final=True)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        order = sorted(range(len(self.window.samples)), key=lambda i: self.window.samples[i][0])
        self.window.samples = [self.window.samples[i] for i in order]
        self.window.rails = [self.window.rails[i] for i in order]
        return self.window


def measure_idle(sensor: Sensor, seconds: float, interval_s: float) -> Window:
    """The baseline: sample while the agent sleeps."""
    sampler = Sampler(sensor, interval_s).start()
    time.sleep(seconds)
    return sampler.stop()


def summary(sensor: Sensor, window: Window, idle: Optional[Window], runs: int, interval_s: float) -> dict:
    """The bench document's `power` section."""
    energy = window.energy_j()
    avg = window.avg_w()
    if energy is None or avg is None:
        reason = "too few samples in the window ({})".format(len(window.samples))
        if window.errors:
            reason += ": " + window.errors[0]
        return {"available": False, "reason": reason, "sensor": sensor.name}
    powers = window.powers()
    idle_w = idle.avg_w() if idle is not None else None
    if idle_w is None and idle is not None and idle.samples and not idle.counter:
        idle_w = sum(p for _, p in idle.samples) / len(idle.samples)
    doc = {
        "available": True,
        "sensor": sensor.name,
        "rail": sensor.rail,
        "source": sensor.source,
        "avg_w": avg,
        "peak_w": max(powers) if powers else avg,
        "idle_w": idle_w,
        "energy_j": energy,
        "window_s": window.seconds,
        "energy_per_inference_mj": energy / runs * 1000.0 if runs else None,
        "energy_above_idle_per_inference_mj":
            (avg - idle_w) * window.seconds / runs * 1000.0 if runs and idle_w is not None else None,
        "samples": len(window.samples),
        "idle_samples": len(idle.samples) if idle is not None else 0,
        "interval_s": interval_s,
        "rails_avg_w": window.rail_avg_w(),
        "notes": list(sensor.notes),
    }
    if window.errors:
        doc["read_errors"] = window.errors
    return doc
