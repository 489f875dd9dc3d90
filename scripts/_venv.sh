# Sourced by scripts/quickstart and scripts/test: make .venv and install edgekit into it.
# torch is pinned first: any other version is a multi-GB CUDA download on these machines.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: edgekit needs Python >= 3.10 on the host; set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "==> installing torch 2.13.0 (CPU) and edgekit${EXTRAS:+[$EXTRAS]}"
quiet_pip "torch==2.13.0"
quiet_pip -e ".${EXTRAS:+[$EXTRAS]}"
