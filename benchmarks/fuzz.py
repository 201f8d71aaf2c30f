"""Fuzz every parser of untrusted input for minutes: the hypothesis targets `make test` runs
briefly (tests/faults/fuzz_targets.py), then coverage-guided atheris (libFuzzer) on the parsers
that take raw bytes, when atheris is installed.

    .venv/bin/python benchmarks/fuzz.py                        # 10 minutes in all (`make soak`)
    .venv/bin/python benchmarks/fuzz.py --minutes 1 --only records bundles

The time is split evenly over the targets. Prints, per target, how many examples (hypothesis) or
executions (atheris) ran and every failure: the input, shrunk, and what escaped. A failure is any
exception but a `LineageError` subclass, an unclear (multi-line or overlong) error message, or a
changed input that still verifies. Exits 1 when anything was found.

atheris: `.venv/bin/pip install atheris` (3.0.0 installs from a wheel for CPython 3.11 on x86-64
Linux; it is not a project dependency). Without it, only the hypothesis targets run and this says
so. Its findings are written to the folder printed at the end (crash-* files libFuzzer can replay).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Targets whose input is plain bytes: atheris feeds them directly.
ATHERIS_TARGETS = ("records", "envelopes", "checkpoints", "trust_stores", "usage_files")
SUFFIXES = (".csv", ".jsonl", ".parquet", ".arrow")


def hypothesis_child(name: str, seconds: float, folder: Path) -> None:
    """Runs in its own process, so that a crash (a segfault in a C extension) is a finding too:
    each input is pickled to `last-input.pickle` before it is tried. Prints one JSON result."""
    from tests.faults.fuzz_targets import BUILDERS, build_world

    target = BUILDERS[name](build_world(folder))
    check = target.check
    last = folder / "last-input.pickle"

    def keep_then_check(value: object) -> None:
        last.write_bytes(pickle.dumps(value))
        check(value)

    target.check = keep_then_check
    deadline = time.monotonic() + seconds
    rng = random.Random()
    failure = None
    while time.monotonic() < deadline and failure is None:
        try:
            target.run(500, seed=rng.randrange(2**32))
        except Exception as exc:  # a finding: report what hypothesis shrank it to
            notes = "\n".join(getattr(exc, "__notes__", []))
            found = "".join(traceback.format_exception_only(exc)).strip()
            failure = f"{found}\n{notes}".strip()
    print(json.dumps({"count": target.examples, "failure": failure}))


def run_hypothesis(name: str, seconds: float, folder: Path) -> tuple[int, str | None]:
    """Examples run and the first failure (None when clean), in rounds with fresh seeds."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", "hypothesis", name, "--seconds", str(seconds),
         "--folder", str(folder)],
        capture_output=True, text=True, timeout=seconds + 600, cwd=ROOT,
    )
    if done.returncode != 0:
        died = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        return 0, f"the process died ({died}); last input: {folder / 'last-input.pickle'}\n{tail}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return int(result["count"]), result["failure"]


def atheris_child(name: str, seconds: float, folder: Path) -> None:
    """Runs in its own process: libFuzzer exits it when the time is up or on a finding."""
    import atheris

    with atheris.instrument_imports(include=["lineage_platform"]):
        from tests.faults.fuzz_targets import BUILDERS, build_world

    world = build_world(folder / "world")
    check = BUILDERS[name](world).check
    corpus = folder / "corpus"
    corpus.mkdir(exist_ok=True)
    seeds = {
        "records": world.record_bytes,
        "envelopes": world.envelopes,
        "checkpoints": [world.checkpoint],
        "trust_stores": [world.trust.to_json()],
        "usage_files": [],
    }[name]
    if name == "usage_files":
        from tests.faults.fuzz_targets import _event_file_bases

        seeds = [bytes([SUFFIXES.index(s)]) + data for s, data in _event_file_bases()]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)

    def one_input(data: bytes) -> None:
        if name == "usage_files":
            if not data:
                return
            check((SUFFIXES[data[0] % len(SUFFIXES)], data[1:]))
        else:
            check(data)

    atheris.Setup(
        [sys.argv[0], f"-max_total_time={int(seconds)}", "-print_final_stats=1", "-timeout=20",
         "-rss_limit_mb=4096", f"-artifact_prefix={folder}/", str(corpus)],
        one_input,
    )
    atheris.Fuzz()


def run_atheris(name: str, seconds: float, folder: Path) -> tuple[int, str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, __file__, "--child", "atheris", name, "--seconds", str(seconds),
         "--folder", str(folder)],
        capture_output=True, text=True, timeout=seconds + 300, cwd=ROOT,
    )
    runs = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
    count = int(runs.group(1)) if runs else 0
    if done.returncode == 0:
        return count, None
    lines = (done.stdout + "\n" + done.stderr).splitlines()  # the Python traceback: stdout
    start = next((i for i, line in enumerate(lines) if "Uncaught Python exception" in line), 0)
    crash = next((line for line in lines if "Test unit written to" in line), "")
    return count, "\n".join([*lines[start : start + 30], crash]).strip()


def main() -> int:
    from tests.faults.fuzz_targets import BUILDERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="total time (default 10)")
    parser.add_argument("--only", nargs="*", choices=list(BUILDERS), help="just these targets")
    parser.add_argument("--no-atheris", action="store_true", help="hypothesis targets only")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, name = args.child
        child = hypothesis_child if engine == "hypothesis" else atheris_child
        child(name, args.seconds, args.folder)
        return 0

    names = args.only or list(BUILDERS)
    try:
        import atheris  # noqa: F401
    except ImportError:
        atheris_names: list[str] = []
        if not args.no_atheris:
            print("atheris is not installed (`.venv/bin/pip install atheris`): hypothesis only")
    else:
        atheris_names = [] if args.no_atheris else [n for n in names if n in ATHERIS_TARGETS]
    jobs = [("hypothesis", n) for n in names] + [("atheris", n) for n in atheris_names]
    share = args.minutes * 60 / len(jobs)
    work = Path(tempfile.mkdtemp(prefix="lineage-fuzz-"))
    print(f"{len(jobs)} targets, {share:.0f} s each, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; scratch {work}")
    findings = 0
    for engine, name in jobs:
        started = time.monotonic()
        folder = work / f"{engine}-{name}"
        folder.mkdir()
        runner = run_hypothesis if engine == "hypothesis" else run_atheris
        count, failure = runner(name, share, folder)
        took = time.monotonic() - started
        status = "ok" if failure is None else "FAILED"
        print(f"{engine:10s} {name:13s} {count:>10,d} inputs in {took:5.0f} s "
              f"({count / max(took, 1e-9):,.0f}/s)  {status}", flush=True)
        if failure is not None:
            findings += 1
            print("    " + failure.replace("\n", "\n    "), flush=True)
    if findings:
        print(f"{findings} finding(s); atheris artifacts (crash-*) under {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("0 findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
