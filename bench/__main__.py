"""Both tables with one command: `python -m bench [--quick]`.

Prints the machine, then the ingress table (bench/ingress.py) and the workers table
(bench/workers.py), and writes all of it to bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench import ingress, load, workers
from bench.servers import machine

RESULTS = Path(__file__).with_name("results")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run of everything (about 3 min)")
    parser.add_argument("--only", choices=("ingress", "workers"), help="one of the two tables")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    started = time.monotonic()
    info = machine()
    header = ["## Benchmarks", "",
              f"Command: `{shlex.join(['python', '-m', 'bench', *given])}`",
              "",
              f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, Python {info['python']}, "
              f"Linux {info['kernel']}; {info['date']}. Load generator: "
              f"{'wrk (a fresh run id per request)' if load.have_wrk() else 'Python asyncio (wrk not on PATH)'}"
              "; open loop: bench/load.py (latency from each request's scheduled time).", ""]
    print("\n".join(header), flush=True)
    flag = ["--quick"] if args.quick else []
    lines = list(header)
    if args.only in (None, "ingress"):
        lines += [*ingress.main(flag), ""]
    if args.only in (None, "workers"):
        lines += [*workers.main(flag), ""]
    lines.append(f"_Total bench time: {(time.monotonic() - started) / 60:.1f} min._")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
