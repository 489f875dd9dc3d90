"""Plot primitives that write inline SVG: no plotting library, nothing fetched, same bytes every time.

Every plot is an `<svg class="plot" data-plot=KIND>` whose marks carry a class (`point`,
`front`, `bar`, `box`, ...) so a test can find them in the rendered page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

WIDTH, HEIGHT = 520, 300
MARGIN = (48, 16, 44, 64)  # top, right, bottom, left
PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d", "#db2777")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def fmt_tick(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class Axes:
    """A linear x/y mapping into the plot area, with the frame, ticks and labels drawn once."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def left(self) -> float:
        return MARGIN[3]

    @property
    def right(self) -> float:
        return self.width - MARGIN[1]

    @property
    def top(self) -> float:
        return MARGIN[0]

    @property
    def bottom(self) -> float:
        return self.height - MARGIN[2]

    def x(self, v: float) -> float:
        span = self.x_hi - self.x_lo or 1.0
        return round(self.left + (v - self.x_lo) / span * (self.right - self.left), 2)

    def y(self, v: float) -> float:
        span = self.y_hi - self.y_lo or 1.0
        return round(self.bottom - (v - self.y_lo) / span * (self.bottom - self.top), 2)

    def frame(self, x_ticks: Sequence[float] | None, y_ticks: Sequence[float], x_label: str, y_label: str) -> str:
        parts = [f'<rect class="frame" x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
                 f'height="{self.bottom - self.top}" fill="#fff" stroke="#94a3b8"/>']
        for t in y_ticks:
            y = self.y(t)
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.right}" y1="{y}" y2="{y}" stroke="#e2e8f0"/>'
                         f'<text x="{self.left - 6}" y="{y + 4}" text-anchor="end">{fmt_tick(t)}</text>')
        for t in x_ticks or ():
            x = self.x(t)
            parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{self.top}" y2="{self.bottom}" stroke="#e2e8f0"/>'
                         f'<text x="{x}" y="{self.bottom + 16}" text-anchor="middle">{fmt_tick(t)}</text>')
        parts.append(f'<text class="label" x="{(self.left + self.right) / 2}" y="{self.height - 8}" '
                     f'text-anchor="middle">{escape(x_label)}</text>')
        cy = (self.top + self.bottom) / 2
        parts.append(f'<text class="label" x="14" y="{cy}" text-anchor="middle" '
                     f'transform="rotate(-90 14 {cy})">{escape(y_label)}</text>')
        return "".join(parts)


def _svg(kind: str, title: str, body: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg class="plot" data-plot="{kind}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<text class="title" x="{MARGIN[3]}" y="22">{escape(title)}</text>{body}</svg>')


EMPTY_LINE_CHARS = 64  # what fits across a plot at the empty message's font size


def wrap(message: str, width: int = EMPTY_LINE_CHARS) -> list[str]:
    """Words into lines of at most `width` characters (a longer word stands alone)."""
    lines: list[str] = []
    for word in message.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def empty(kind: str, title: str, message: str) -> str:
    """A plot that has nothing to show says why, in the space where it would have been, wrapped
    onto as many lines as it needs rather than clipped at the edge."""
    lines = wrap(message)
    spans = "".join(f'<tspan x="{WIDTH / 2}" dy="{0 if i == 0 else 16}">{escape(line)}</tspan>'
                    for i, line in enumerate(lines))
    return _svg(kind, title, f'<text class="empty" x="{WIDTH / 2}" y="70" text-anchor="middle">{spans}</text>',
                height=100 + 16 * len(lines))


def _padded(lo: float, hi: float, pad: float = 0.08) -> tuple[float, float]:
    span = hi - lo or abs(hi) or 1.0
    return lo - span * pad, hi + span * pad


@dataclass
class Point:
    x: float
    y: float
    label: str
    highlight: bool = False  # the chosen variant
    on_front: bool = False


def scatter(kind: str, title: str, points: Sequence[Point], x_label: str, y_label: str,
            y_max: float | None = None) -> str:
    """Points with the Pareto front drawn as a line through the points flagged `on_front`."""
    if not points:
        return empty(kind, title, "nothing measured")
    x_lo, x_hi = _padded(min(p.x for p in points), max(p.x for p in points))
    y_lo, y_hi = _padded(min(p.y for p in points), max(p.y for p in points))
    if y_max is not None:
        y_hi = min(y_hi, y_max)
        y_lo = min(y_lo, y_hi - max(1.0, (y_hi - y_lo)))
    xt, yt = nice_ticks(max(0.0, x_lo), x_hi), nice_ticks(y_lo, y_hi)
    if y_max is not None:
        yt = [t for t in yt if t <= y_max] or yt
    ax = Axes(xt[0], xt[-1], yt[0], yt[-1])
    body = [ax.frame(xt, yt, x_label, y_label)]
    front = sorted((p for p in points if p.on_front), key=lambda p: p.x)
    if front:
        path = " ".join(f"{ax.x(p.x)},{ax.y(p.y)}" for p in front)
        body.append(f'<polyline class="front" points="{path}" fill="none" stroke="#16a34a" stroke-width="2" '
                    f'stroke-dasharray="6 3"/>')
    for p in front:
        body.append(f'<circle class="front-mark" cx="{ax.x(p.x)}" cy="{ax.y(p.y)}" r="11" fill="none" '
                    f'stroke="#16a34a" stroke-width="2" stroke-dasharray="3 2"/>')
    for i, p in enumerate(points):
        colour = PALETTE[i % len(PALETTE)]
        r = 7 if p.highlight else 5
        ring = ' stroke="#111827" stroke-width="2.5"' if p.highlight else ' stroke="#fff" stroke-width="1"'
        body.append(f'<circle class="point{" chosen" if p.highlight else ""}{" on-front" if p.on_front else ""}" '
                    f'cx="{ax.x(p.x)}" cy="{ax.y(p.y)}" r="{r}" fill="{colour}"{ring}>'
                    f'<title>{escape(p.label)}: {p.x:.4g}, {p.y:.4g}</title></circle>'
                    + _point_label(ax, p))
    body.append(f'<text class="legend" x="{ax.right}" y="22" text-anchor="end">'
                f'<tspan fill="#16a34a">◌ - - Pareto front</tspan>  ◉ chosen</text>')
    return _svg(kind, title, "".join(body))


def _point_label(ax: Axes, p: Point) -> str:
    """Beside the point, on whichever side has room."""
    x = ax.x(p.x)
    right = x > ax.left + (ax.right - ax.left) * 0.6
    return (f'<text class="point-label" x="{x - 9 if right else x + 9}" y="{ax.y(p.y) - 8}" '
            f'text-anchor="{"end" if right else "start"}">{escape(p.label)}</text>')


@dataclass
class Bar:
    label: str
    value: float | None  # None: drawn as a "not measured" gap
    low: float | None = None  # error bar (e.g. the median's 95 % CI)
    high: float | None = None
    highlight: bool = False
    note: str = ""


def bars(kind: str, title: str, items: Sequence[Bar], y_label: str) -> str:
    """Vertical bars from zero, with optional error bars; missing values keep their slot, labelled."""
    values = [b.value for b in items if b.value is not None] + [b.high for b in items if b.high is not None]
    if not values:
        return empty(kind, title, "not measured")
    yt = nice_ticks(0.0, max(values) * 1.05)
    height = HEIGHT + 20
    ax = Axes(0, len(items), yt[0], yt[-1], height=height)
    body = [ax.frame(None, yt, "", y_label)]
    slot = (ax.right - ax.left) / len(items)
    for i, b in enumerate(items):
        cx = ax.left + slot * (i + 0.5)
        w = min(56.0, slot * 0.6)
        body.append(f'<text class="bar-label" x="{cx:.2f}" y="{ax.bottom + 16}" text-anchor="middle">'
                    f'{escape(_short(b.label, slot))}</text>')
        if b.value is None:
            body.append(f'<text class="missing" x="{cx:.2f}" y="{ax.bottom - 8}" text-anchor="middle">'
                        f'{escape(b.note or "not measured")}</text>')
            continue
        y = ax.y(b.value)
        colour = "#16a34a" if b.highlight else PALETTE[0]
        body.append(f'<rect class="bar{" chosen" if b.highlight else ""}" x="{cx - w / 2:.2f}" y="{y}" '
                    f'width="{w:.2f}" height="{max(0.5, ax.bottom - y):.2f}" fill="{colour}">'
                    f'<title>{escape(b.label)}: {b.value:.4g}</title></rect>'
                    f'<text class="bar-value" x="{cx:.2f}" y="{min(y, ax.y(b.high) if b.high is not None else y) - 6}" '
                    f'text-anchor="middle">{b.value:.4g}</text>')
        if b.low is not None and b.high is not None:
            lo, hi = ax.y(b.low), ax.y(b.high)
            body.append(f'<path class="errorbar" d="M{cx:.2f},{lo}V{hi}M{cx - 6:.2f},{lo}h12M{cx - 6:.2f},{hi}h12" '
                        f'stroke="#111827" stroke-width="1.5" fill="none"/>')
    return _svg(kind, title, "".join(body), height=height)


def _short(text: str, room: float) -> str:
    most = max(6, int(room / 6.5))
    return text if len(text) <= most else text[: most - 1] + "…"


def quantiles(samples: Sequence[float]) -> dict[str, float]:
    """Box-plot figures: quartiles and 1st/99th percentiles (numpy's linear interpolation)."""
    s = sorted(samples)

    def q(p: float) -> float:
        pos = (len(s) - 1) * p
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"p01": q(0.01), "q1": q(0.25), "median": q(0.5), "q3": q(0.75), "p99": q(0.99),
            "min": s[0], "max": s[-1]}


def boxes(kind: str, title: str, series: Sequence[tuple[str, Sequence[float], bool]], x_label: str) -> str:
    """Horizontal box plots (whiskers 1st-99th percentile) with each sample as a faint tick."""
    series = [(label, samples, hl) for label, samples, hl in series if samples]
    if not series:
        return empty(kind, title, "no latency samples stored")
    lo = min(quantiles(s)["p01"] for _, s, _ in series)
    hi = max(quantiles(s)["p99"] for _, s, _ in series)
    log = lo > 0 and hi / lo > 20  # a long tail would squash every box into one pixel
    xt = log_ticks(lo, hi) if log else nice_ticks(max(0.0, _padded(lo, hi)[0]), _padded(lo, hi)[1])
    row_h = 46
    height = MARGIN[0] + MARGIN[2] + row_h * len(series)
    ax = Axes(xt[0], xt[-1], 0, len(series), height=height)
    left_pad = 120
    scale = math.log10 if log else float
    span = scale(xt[-1]) - scale(xt[0]) or 1.0

    def x(v: float) -> float:
        v = min(max(v, xt[0]), xt[-1])
        return round(left_pad + (scale(v) - scale(xt[0])) / span * (ax.right - left_pad), 2)

    body = [_frame_h(ax, xt, x_label + (" (log scale)" if log else ""), left_pad, x)]

    for i, (label, samples, hl) in enumerate(series):
        q = quantiles(samples)
        cy = ax.top + row_h * (i + 0.5)
        colour = "#16a34a" if hl else PALETTE[i % len(PALETTE)]
        body.append(f'<text class="box-label" x="{left_pad - 8}" y="{cy + 4:.2f}" text-anchor="end">'
                    f'{escape(_short(label, left_pad - 8))}</text>')
        step = max(1, len(samples) // 400)
        ticks = "".join(f"M{x(v)},{cy + 13:.2f}v5" for v in sorted(samples)[::step])
        body.append(f'<path class="samples" d="{ticks}" stroke="{colour}" stroke-opacity="0.35"/>')
        body.append(f'<path class="whisker" d="M{x(q["p01"])},{cy:.2f}H{x(q["q1"])}M{x(q["q3"])},{cy:.2f}H{x(q["p99"])}'
                    f'M{x(q["p01"])},{cy - 6:.2f}v12M{x(q["p99"])},{cy - 6:.2f}v12" stroke="#334155" fill="none"/>')
        body.append(f'<rect class="box{" chosen" if hl else ""}" x="{x(q["q1"])}" y="{cy - 10:.2f}" '
                    f'width="{max(1.0, x(q["q3"]) - x(q["q1"])):.2f}" height="20" fill="{colour}" '
                    f'fill-opacity="0.55" stroke="{colour}"><title>{escape(label)}: median {q["median"]:.4g} ms, '
                    f'IQR {q["q1"]:.4g}-{q["q3"]:.4g}, p1-p99 {q["p01"]:.4g}-{q["p99"]:.4g}, n={len(samples)}'
                    f'</title></rect>')
        body.append(f'<path class="median" d="M{x(q["median"])},{cy - 10:.2f}v20" stroke="#111827" stroke-width="2"/>')
    return _svg(kind, title, "".join(body), height=height)


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade, from the last one at or below `lo` to the first at or above `hi`."""
    decade = 10.0 ** math.floor(math.log10(lo))
    candidates = []
    while not candidates or candidates[-1] < hi:
        candidates += [float(f"{m * decade:.6g}") for m in (1, 2, 5)]
        decade *= 10
    first = max(i for i, t in enumerate(candidates) if t <= lo)
    last = min(i for i, t in enumerate(candidates) if t >= hi)
    return candidates[first:last + 1]


def _frame_h(ax: Axes, xt: Sequence[float], x_label: str, left: float, xmap) -> str:
    parts = [f'<rect class="frame" x="{left}" y="{ax.top}" width="{ax.right - left}" height="{ax.bottom - ax.top}" '
             f'fill="#fff" stroke="#94a3b8"/>']
    for t in xt:
        x = xmap(t)
        parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{ax.top}" y2="{ax.bottom}" stroke="#e2e8f0"/>'
                     f'<text x="{x}" y="{ax.bottom + 16}" text-anchor="middle">{fmt_tick(t)}</text>')
    parts.append(f'<text class="label" x="{(left + ax.right) / 2}" y="{ax.height - 8}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    return "".join(parts)
