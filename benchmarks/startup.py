"""Start-up time of the command line, as a user meets it: the wall time of new processes running
`vitlab --help` and `vitlab models`, with two references timed in the same rounds:
`python -c pass` (the interpreter alone) and `python -c "import torch"` (what every command that
computes pays before its first line of work).

    python benchmarks/startup.py              # 5 rounds, medians
    python benchmarks/startup.py --runs 9
    git archive HEAD src | tar -x -C /tmp/before    # another version of vitlab, timed in the same rounds:
    python benchmarks/startup.py --against /tmp/before/src

`vitlab models` is timed twice: with an empty cache (every registered model built and counted on
the meta device) and with the cache a first run wrote (``model_stats.json``; both in temporary
``XDG_CACHE_HOME`` folders, never the user's). Each round runs every command once, in an order
that rotates from round to round, so that a drift of the machine's load hits all of them alike.
The processes inherit this environment: with ``PYTHONDONTWRITEBYTECODE=1`` (reported) Python
compiles every module it imports from source, torch's included, each time.

Results and the machines they came from: benchmarks/RESULTS.md ("Start-up").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path


def vitlab_command() -> list[str]:
    """The console script beside this interpreter, else ``python -m vitlab``."""
    script = Path(sys.executable).parent / "vitlab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vitlab"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vitlab_version() -> str:
    import vitlab  # its public names are imported on first use: this imports no torch

    return vitlab.__version__


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds of wall time of one process running ``argv`` (its output discarded); it must succeed."""
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="rounds; each runs every command once (default 5)")
    ap.add_argument("--against", metavar="SRC", help="also time `vitlab --help` and `vitlab models` of the vitlab "
                    "package in this folder (put first on PYTHONPATH), e.g. an earlier version's src/")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be 1 or more")

    vitlab = vitlab_command()
    base_env = dict(os.environ)
    made: list[str] = []  # the temporary cache folders, removed at the end

    def cache(filled: bool = False) -> dict[str, str]:
        made.append(tempfile.mkdtemp(prefix="vitlab-startup-"))
        env = {**base_env, "XDG_CACHE_HOME": made[-1]}
        if filled:  # one untimed run writes the figures
            subprocess.run([*vitlab, "models"], env=env, stdout=subprocess.DEVNULL, check=True)
        return env

    load_before = os.getloadavg()
    try:
        filled = cache(filled=True)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], lambda: base_env),
            'python -c "import torch"': ([sys.executable, "-c", "import torch"], lambda: base_env),
            "vitlab --help": ([*vitlab, "--help"], lambda: base_env),
            "vitlab models (cache empty)": ([*vitlab, "models"], cache),
            "vitlab models (cache filled)": ([*vitlab, "models"], lambda: filled),
        }
        if args.against:
            other = str(Path(args.against).resolve())
            path = os.pathsep.join([other, *filter(None, [base_env.get("PYTHONPATH")])])
            for what in ("--help", "models"):
                commands[f"vitlab {what} ({other})"] = ([*vitlab, what], lambda: {**cache(), "PYTHONPATH": path})
        names = list(commands)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.runs):
            for name in names[r % len(names):] + names[:r % len(names)]:
                argv, env = commands[name]
                times[name].append(timed(argv, env()))
            print(f"round {r + 1}/{args.runs} done", file=sys.stderr, flush=True)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
    load_after = os.getloadavg()

    bytecode = "off (PYTHONDONTWRITEBYTECODE set: every import compiled from source)" \
        if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on (.pyc files written and reused)"
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPU cores; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    print(f"Python {platform.python_version()}, torch {metadata.version('torch')}, "
          f"vitlab {vitlab_version()}; bytecode caching {bytecode}")
    print(f"vitlab command: {' '.join(vitlab)}; {args.runs} rounds\n")
    print("| command | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for name in names:
        t = times[name]
        print(f"| `{name}` | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
