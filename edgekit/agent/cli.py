"""`edgekit-agent COMMAND [options]`: exactly one JSON document on stdout, logs on stderr.

Any failure becomes `{"schema": 1, "error": {"kind", "message"}}` with a non-zero exit; a
traceback only ever reaches stderr. `session` answers many commands in one process (session.py);
each answer is the document the same command prints alone.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from typing import List, Optional, Tuple

from . import bench as bench_mod
from . import deploy
from . import hold
from .probe import probe
from .protocol import AgentError, BenchRequest, emit, emit_error, error_doc, log

VERSION = "1"


class _Parser(argparse.ArgumentParser):
    """argparse that answers only with documents: no --help page on stdout, no exit of its own."""

    def __init__(self, *args, **kwargs):
        kwargs["add_help"] = False  # --help would print text where the host reads one JSON document
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse would print usage and exit 2 with no JSON
        raise AgentError("bad_request", message)


def number(text: str) -> float:
    """A duration, temperature or count of seconds: finite and not negative. NaN compares false
    with every bound, so `--min-s nan` would measure for ever and `--warmup-s inf` never start."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("{!r} is not a finite number >= 0".format(text))
    return value


def rate(text: str) -> float:
    value = number(text)
    if value == 0:
        raise argparse.ArgumentTypeError("{!r} is not a rate > 0".format(text))
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("{!r} is not an integer >= 0".format(text))
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgekit-agent", description="edgekit device agent")
    sub = p.add_subparsers(dest="command")
    sub.required = True

    sub.add_parser("version")
    pr = sub.add_parser("probe")
    pr.add_argument("--root", default="/", help="read device files under this root (tests)")

    def artifact_args(sp):
        sp.add_argument("--artifact", required=True)
        sp.add_argument("--runtime", required=True)
        sp.add_argument("--sha256")
        sp.add_argument("--threads", type=count, default=0)
        sp.add_argument("--provider", default="auto",
                        help="onnxruntime execution provider: auto, cpu, cuda, tensorrt (or a full name)")

    b = sub.add_parser("bench")
    artifact_args(b)
    b.add_argument("--inputs")
    b.add_argument("--warmup-s", type=number, default=0.5)
    b.add_argument("--min-runs", type=count, default=50)
    b.add_argument("--min-s", type=number, default=1.0)
    b.add_argument("--max-s", type=number, default=30.0)
    b.add_argument("--max-runs", type=count, default=1000000)
    b.add_argument("--root", default="/", help="read device files under this root (tests)")
    b.add_argument("--power", default="auto", help="auto, off, or a sensor name")
    b.add_argument("--power-interval-s", type=rate, default=0.05)
    b.add_argument("--idle-s", type=number, default=1.0, help="idle baseline before the window; 0 skips it")
    b.add_argument("--cooldown-c", type=number, help="wait until the hottest thermal zone is at most this")
    b.add_argument("--cooldown-max-s", type=number, default=300.0)
    b.add_argument("--warmup-max-s", type=number, help="bound on warmup when latency does not settle "
                   "(default: max(2, 4 x warmup-s))")
    b.add_argument("--rate-hz", type=rate, help="call at this fixed rate (a camera) instead of back to back")

    r = sub.add_parser("run")
    artifact_args(r)
    r.add_argument("--inputs", required=True)
    r.add_argument("--outputs", required=True)

    for name in ("install", "activate", "rollback", "status"):
        sp = sub.add_parser(name)
        sp.add_argument("--workdir", default="~/.edgekit")
        sp.add_argument("--model", required=name != "status")
        if name in ("install", "activate"):
            sp.add_argument("--variant", required=True)
        if name == "install":
            sp.add_argument("--artifact", required=True)
            sp.add_argument("--sha256", required=True)
            sp.add_argument("--meta")

    lk = sub.add_parser("lock")  # holds the device lock until stdin closes
    lk.add_argument("--workdir", default="~/.edgekit")
    lk.add_argument("--holder", required=True)
    lk.add_argument("--wait-s", type=number, default=0.0)
    ls = sub.add_parser("lock-status")
    ls.add_argument("--workdir", default="~/.edgekit")
    se = sub.add_parser("session")  # the lock, then JSON-lines requests on stdin until it closes
    se.add_argument("--workdir", default="~/.edgekit")
    se.add_argument("--holder", required=True)
    se.add_argument("--wait-s", type=number, default=0.0)
    se.add_argument("--python", help="the interpreter for bench and run children (the target's, as the "
                    "host names it; default: this one)")
    rm = sub.add_parser("remove")  # scratch files of an earlier command, never through a link
    rm.add_argument("--workdir", default="~/.edgekit")
    rm.add_argument("paths", nargs="+")
    gc = sub.add_parser("gc")  # remove what no deployment uses and no run will miss (gc.py)
    gc.add_argument("--workdir", default="~/.edgekit")
    gc.add_argument("--keep-days", type=float, default=7.0)
    gc.add_argument("--dry-run", action="store_true")
    wi = sub.add_parser("within")  # one bench/run as its own process group, killed at the timeout
    wi.add_argument("--timeout-s", type=float, required=True)
    wi.add_argument("argv", nargs=argparse.REMAINDER)
    ac = sub.add_parser("accept")  # verified rename of an upload into place
    ac.add_argument("--source", required=True)
    ac.add_argument("--dest", required=True)
    ac.add_argument("--sha256", required=True)
    return p


def dispatch(args) -> dict:
    if args.command == "version":
        return {"command": "version", "agent": VERSION, "python": sys.version.split()[0]}
    if args.command == "probe":
        return probe(args.root)
    if args.command == "bench":
        return bench_mod.bench(BenchRequest.from_args(args))
    if args.command == "run":
        return bench_mod.run(args.runtime, args.artifact, args.sha256, args.inputs, args.outputs, args.threads,
                             args.provider)
    if args.command == "lock":
        hold.hold_lock(args.workdir, args.holder, args.wait_s)
        return None
    if args.command == "session":
        from . import session

        session.serve(args.workdir, args.holder, args.wait_s, answer, args.python)
        return None
    if args.command == "gc":
        from . import gc

        return gc.collect(args.workdir, args.keep_days, args.dry_run)
    if args.command == "within":
        from . import session

        session.within(args.argv, args.timeout_s)
        return None
    if args.command == "remove":
        return hold.remove(args.workdir, args.paths)
    if args.command == "lock-status":
        return hold.lock_status(args.workdir)
    if args.command == "accept":
        return hold.accept(args.source, args.dest, args.sha256)
    if args.command == "install":
        return deploy.install(args.workdir, args.model, args.variant, args.artifact, args.sha256, args.meta)
    if args.command == "activate":
        return deploy.activate(args.workdir, args.model, args.variant)
    if args.command == "rollback":
        return deploy.rollback(args.workdir, args.model)
    return deploy.status(args.workdir, args.model)


def answer(argv: List[str]) -> Tuple[int, Optional[dict]]:
    """One command's exit code and document (None: `lock` and `session` emit their own)."""
    try:
        return 0, dispatch(_parser().parse_args(argv))
    except AgentError as exc:
        return 3, error_doc(exc.kind, exc.message)
    except MemoryError:
        return 3, error_doc("out_of_memory", "the agent ran out of memory")
    except Exception as exc:  # a bug: the host still gets one parseable document
        log(traceback.format_exc())
        return 4, error_doc("internal", "{}: {}".format(type(exc).__name__, " ".join(str(exc).split())[:300]))


def main(argv: Optional[List[str]] = None) -> int:
    try:
        code, doc = answer(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        emit_error("internal", "interrupted")
        return 130
    if doc is not None:
        emit(doc)
    return code
