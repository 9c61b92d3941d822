"""Run every benchmark, print one markdown table, save the raw figures as JSON.

::

    python benchmarks/run_all.py --quick      # under 2 minutes
    python benchmarks/run_all.py              # the full run, about 10 minutes
    python benchmarks/run_all.py --only poll,decode
    python benchmarks/run_all.py --loop asyncio   # asyncio's loop even where uvloop is installed

Each scenario runs in a process of its own (``benchmarks/bench_*.py``), and each of those starts
the emulator in yet another process (``benchmarks/_server.py``). The JSON goes to
``benchmarks/results/<date>-<quick|full>.json`` with the environment (Python, package versions,
CPU model, load average) and every repetition's raw figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import HERE, LOOP_ENV, Row, environment, markdown_table, pin_client

SCENARIOS = {
    "poll": "bench_poll.py",
    "decode": "bench_decode.py",
    "memory": "bench_memory.py",
    "workload": "bench_workload.py",
    "pages": "bench_pages.py",
    "harvest": "bench_harvest.py",
    "request": "bench_request.py",
    "ratelimit": "bench_ratelimit.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the short run (under 2 minutes)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--results", default=str(HERE / "results"), help="where the JSON goes")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default=os.environ.get(LOOP_ENV, "auto"),
        help="the clients' event loop (auto: uvloop where installed)",
    )
    args = parser.parse_args()
    os.environ[LOOP_ENV] = args.loop  # the scenarios' processes read it
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    pin_client()
    mode = "quick" if args.quick else "full"
    started = time.perf_counter()
    env = environment()
    scenarios: list[dict[str, Any]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(HERE / SCENARIOS[name]), "--out", str(out)]
            if args.quick:
                command.append("--quick")
            print(
                f"[{time.perf_counter() - started:6.1f}s] {name} ...", file=sys.stderr, flush=True
            )
            proc = subprocess.run(command, check=False)
            if proc.returncode != 0 or not out.exists():
                failures.append(name)
                print(f"  {name} FAILED (exit {proc.returncode})", file=sys.stderr, flush=True)
                continue
            scenarios.append(json.loads(out.read_text()))
    elapsed = time.perf_counter() - started
    env["loadavg_start"] = env.pop("loadavg")
    end = environment()
    env["loadavg_end"] = end["loadavg"]
    env["asyncclient_source_end"] = end["asyncclient_source"]
    # The package may be edited while this runs; then the scenarios measured different code.
    moved = (
        end["asyncclient_source"]["sources_sha256"] != env["asyncclient_source"]["sources_sha256"]
    )
    env["asyncclient_changed_during_run"] = moved
    rows = [Row(**row) for scenario in scenarios for row in scenario["rows"]]
    report = {
        "mode": mode,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "environment": env,
        "failed": failures,
        "targets": [
            {"scenario": r.scenario, "contender": r.contender, "target": r.target, "met": r.met}
            for r in rows
            if r.met is not None
        ],
        "scenarios": scenarios,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{datetime.date.today().isoformat()}-{mode}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    print(f"## asyncclient benchmarks ({mode})\n")
    print(f"Python {sys.version.split()[0]}, {env['cpu_model']} × {env['cpu_count']}; {packages}")
    source = env["asyncclient_source"]
    print(
        f"client and server pinned to separate cores: {env['pinned']}; clients' event loop: "
        f"{env['event_loop']}; load average "
        f"{env['loadavg_start'][0]:.1f} at start; asyncclient sources {source}\n"
    )
    print(markdown_table(rows))
    met = [r.met for r in rows if r.met is not None]
    print(f"\ntargets met: {sum(met)}/{len(met)}; took {elapsed:.0f} s; raw figures in {path}")
    if moved:
        print("WARNING: asyncclient's sources changed during the run; scenarios saw different code")
    if failures:
        print(f"FAILED scenarios: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
