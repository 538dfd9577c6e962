"""Peak RSS of a backfill: 20,000 vs 200,000 jobs.

The emulator runs in its own process (bench.emulator_proc); the backfill runs in another
subprocess (``--child``: scratch warehouse, SourceSync.backfill with concurrency 8 at 0 ms
latency), which reports its RSS before the backfill and its VmHWM (the kernel's exact peak
RSS) after it. Only the signer-sync process is measured.

    python -m bench.memory           # 20k and 200k jobs, 2 rounds each
    python -m bench.memory --quick   # 2k and 20k jobs, 1 round
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from bench.common import (
    EmulatorProcess,
    dummy_aws_env,
    make_source_sync,
    median,
    mib,
    publish,
    scratch_warehouse,
    vm_hwm,
)


def child(url: str, region: str) -> dict[str, Any]:
    import psutil

    logging.basicConfig(level=logging.WARNING)
    dummy_aws_env()
    with scratch_warehouse(concurrency=8) as (settings, engine):
        sync = make_source_sync(settings, engine, url, region)
        before = psutil.Process().memory_info().rss
        hwm_before = vm_hwm()
        start = time.perf_counter()
        report = sync.backfill()
        seconds = time.perf_counter() - start
        return {
            "rss_before": before,
            "hwm_before": hwm_before,
            "peak": vm_hwm(),
            "seconds": seconds,
            "jobs": report.stats.inserted + report.stats.updated + report.stats.unchanged,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("URL", "REGION"))
    parser.add_argument("--json", help="also write the raw measurements here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    if args.quick:
        args.sizes, args.rounds = [2_000, 20_000], 1
    dummy_aws_env()
    results: dict[int, list[dict[str, Any]]] = defaultdict(list)
    emulators = {size: EmulatorProcess(size) for size in args.sizes}
    try:
        for number in range(args.rounds):
            order = args.sizes if number % 2 == 0 else list(reversed(args.sizes))
            for size in order:
                emu = emulators[size]
                done = subprocess.run(
                    [sys.executable, "-m", "bench.memory", "--child", emu.url, emu.region],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                results[size].append(json.loads(done.stdout.strip().splitlines()[-1]))
                last = results[size][-1]
                print(
                    f"# round {number + 1}/{args.rounds}, {size} jobs: peak "
                    f"{mib(last['peak']):.0f} MiB, {last['seconds']:.1f}s",
                    flush=True,
                )
    finally:
        for emu in emulators.values():
            emu.close()
    table = []
    smallest = args.sizes[0]
    for size in args.sizes:
        runs = results[size]
        peak = median([r["peak"] for r in runs])
        table.append(
            [
                size,
                len(runs),
                f"{mib(median([r['rss_before'] for r in runs])):.0f}",
                f"{mib(peak):.0f}",
                f"{mib(median([r['peak'] - r['rss_before'] for r in runs])):.0f}",
                f"{mib(peak - median([r['peak'] for r in results[smallest]])):+.0f}",
                f"{median([r['seconds'] for r in runs]):.1f}",
            ]
        )
    print()
    publish(
        [
            "jobs",
            "rounds",
            "RSS before backfill MiB",
            "peak RSS (VmHWM) MiB",
            "peak - before MiB",
            f"peak vs {smallest} jobs MiB",
            "backfill s",
        ],
        table,
        results,
        args.json,
    )


if __name__ == "__main__":
    main()
