"""How figures are written, in one place, so every view shows the same digits for the same number."""

from __future__ import annotations


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def ci(bounds: tuple[float, float] | None) -> str:
    return "-" if bounds is None else f"{ms(bounds[0])}–{ms(bounds[1])}"


def size(n: int | None) -> str:
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def watts(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def mj(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def pct(fraction: float | None) -> str:
    """A fraction as percent (accuracy) or points (accuracy drop)."""
    return "-" if fraction is None else f"{fraction * 100:.2f}"


def signed_pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:+.1f}%"


def parity(doc: dict) -> str:
    """The device-vs-host output check: ✓ top-1 agreement · max |diff|, ✗ and why, or - when not run."""
    if not doc:
        return "-"
    if not doc.get("passed"):
        return "✗ " + "; ".join(doc.get("problems") or ["failed"])
    agree, diff, cos = doc.get("top1_agreement"), doc.get("max_abs_diff"), doc.get("mean_cosine")
    parts = [f"{agree * 100:.1f}%" if agree is not None else f"cos {cosine(cos)}" if cos is not None else None,
             f"{diff:.2g}" if diff is not None else None]
    return "✓ " + " · ".join(p for p in parts if p)


def fixed(value: float | None, digits: int) -> str:
    """Machine formats: a fixed number of decimals, empty when absent."""
    return "" if value is None else f"{value:.{digits}f}"


def cosine(value: float | None) -> str:
    """Cosine similarity to the original: four decimals, since 0.99 and 0.9999 are far apart."""
    return "-" if value is None else f"{value:.4f}"


def inputs(document: dict) -> str:
    """A bench document's inputs: `image [1,3,320,320] float32 from evaluation data`."""
    fed = document.get("inputs") or []
    if not isinstance(fed, list) or not fed:
        return ""
    parts = []
    for i in fed[:6]:
        if isinstance(i, dict):
            shape = ",".join(str(d) for d in i.get("shape") or []) if i.get("shape") is not None else "?"
            parts.append(f"{i.get('name', '?')} [{shape}] {i.get('dtype', '')}".rstrip())
    source = document.get("inputs_source")
    return ", ".join(parts) + (f" from {source}" if source else "")
