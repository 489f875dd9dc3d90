"""Package edgekit/agent/ as one zipapp, byte-for-byte reproducible so its hash names its version."""

from __future__ import annotations

import hashlib
import io
import zipfile
from functools import lru_cache
from pathlib import Path

AGENT_SRC = Path(__file__).resolve().parent / "agent"
PACKAGE = "edgekit_agent"
MAIN = f"import sys\nfrom {PACKAGE}.cli import main\nsys.exit(main())\n"


@lru_cache(maxsize=1)
def agent_zipapp() -> tuple[bytes, str]:
    """(bytes of edgekit-agent.pyz, its sha256)."""
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)

        add("__main__.py", MAIN.encode())
        for src in sorted(AGENT_SRC.glob("*.py")):
            if src.name != "__main__.py":
                add(f"{PACKAGE}/{src.name}", src.read_bytes())
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def write_agent(dest: Path) -> Path:
    data, _ = agent_zipapp()
    dest.write_bytes(data)
    return dest
