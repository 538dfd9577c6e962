"""Backfill throughput: signer-sync (concurrency 8 and 1) vs a raw serial boto3 paginator.

The emulator runs in another process (bench.emulator_proc) with Faults(latency_ms=L); the
warehouse is a scratch PostgreSQL schema per round. Variants are interleaved within each
round (rotating order) and ratios are taken within a round, then the median is reported.

    python -m bench.backfill            # 20k and 200k jobs, L = 0 and 50 ms
    python -m bench.backfill --quick    # 5k jobs, one round: a smoke test (< 1 min)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from typing import Any

import boto3

from bench.common import (
    EmulatorProcess,
    dummy_aws_env,
    fmt_table,
    make_source_sync,
    median,
    ratio,
    scratch_warehouse,
)

VARIANTS = ("raw", "ss8", "ss1")
LABELS = {
    "raw": "raw boto3 paginator (serial, read only)",
    "ss8_cold": "signer-sync c=8, cold (empty warehouse: bisection)",
    "ss8_warm": "signer-sync c=8, warm (re-backfill, quantile windows, all unchanged)",
    "ss1_cold": "signer-sync c=1 (serial), cold",
}


def run_raw(emu: EmulatorProcess) -> dict[str, Any]:
    client = boto3.Session().client("signer", endpoint_url=emu.url, region_name=emu.region)
    paginator = client.get_paginator("list_signing_jobs")
    jobs = pages = 0
    start = time.perf_counter()
    for page in paginator.paginate(PaginationConfig={"PageSize": 25}):
        jobs += len(page["jobs"])
        pages += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "jobs": jobs, "calls": {"ListSigningJobs": pages}}


def run_signer_sync(emu: EmulatorProcess, concurrency: int, warm: bool) -> list[dict[str, Any]]:
    """A cold backfill into an empty scratch warehouse, then (``warm``) a second one."""
    out = []
    with scratch_warehouse(concurrency=concurrency) as (settings, engine):
        for _ in range(2 if warm else 1):
            sync = make_source_sync(settings, engine, emu.url, emu.region)
            start = time.perf_counter()
            report = sync.backfill()
            seconds = time.perf_counter() - start
            stats = report.stats
            out.append(
                {
                    "seconds": seconds,
                    "jobs": stats.inserted + stats.updated + stats.unchanged,
                    "inserted": stats.inserted,
                    "unchanged": stats.unchanged,
                    "calls": dict(report.figures.api_calls),
                    "listings": report.listings,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--slow-rounds",
        type=int,
        default=1,
        help="rounds for cells whose serial listing exceeds 2000 calls at >= 20 ms latency"
        " (other 200k or 50 ms cells: --rounds minus one)",
    )
    parser.add_argument(
        "--serial-slow",
        action="store_true",
        help="also run signer-sync c=1 in the slow cells (200k at 50 ms: ~12 min more)",
    )
    parser.add_argument("--json", help="also write the raw measurements here")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.slow_rounds = [5_000], 1, 1
    logging.basicConfig(level=logging.WARNING)
    dummy_aws_env()

    results: dict[str, Any] = {}
    summary_rows: list[list[Any]] = []
    for size in args.sizes:
        with EmulatorProcess(size) as emu:
            for latency in args.latencies:
                emu.set_latency(latency)
                slow = latency >= 20 and size / 25 > 2000  # a serial listing takes minutes
                big = size > 50_000 or latency >= 20
                rounds = (
                    args.slow_rounds if slow else max(1, args.rounds - 1) if big else args.rounds
                )
                variants = VARIANTS if not slow or args.serial_slow else ("raw", "ss8")
                cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for number in range(rounds):
                    shift = number % len(variants)
                    order = variants[shift:] + variants[:shift]
                    for variant in order:
                        if variant == "raw":
                            cell["raw"].append(run_raw(emu))
                        elif variant == "ss8":
                            cold, warm = run_signer_sync(emu, 8, warm=True)
                            cell["ss8_cold"].append(cold)
                            cell["ss8_warm"].append(warm)
                        else:
                            (cold,) = run_signer_sync(emu, 1, warm=False)
                            cell["ss1_cold"].append(cold)
                    done = {k: f"{v[-1]['seconds']:.2f}s" for k, v in cell.items()}
                    print(
                        f"# {size} jobs, {latency:g} ms, round {number + 1}/{rounds}: {done}",
                        flush=True,
                    )
                key = f"{size}@{latency:g}ms"
                results[key] = {"rounds": rounds, "listed": emu.listed, **cell}
                raw = cell["raw"]
                for name in ("raw", "ss8_cold", "ss8_warm", "ss1_cold"):
                    runs = cell[name]
                    if not runs:
                        summary_rows.append(
                            [size, f"{latency:g}", LABELS[name], 0, "not run", "", "", ""]
                        )
                        continue
                    secs = [r["seconds"] for r in runs]
                    per_round = [
                        ratio(b["seconds"], r["seconds"]) for b, r in zip(raw, runs, strict=True)
                    ]
                    calls = runs[-1]["calls"]
                    summary_rows.append(
                        [
                            size,
                            f"{latency:g}",
                            LABELS[name],
                            rounds,
                            f"{median(secs):.2f}",
                            f"{emu.listed / median(secs):,.0f}",
                            "1.00" if name == "raw" else f"{median(per_round):.2f}",
                            ", ".join(f"{k}={v}" for k, v in sorted(calls.items())),
                        ]
                    )
    print()
    print(
        fmt_table(
            [
                "jobs",
                "latency ms",
                "variant",
                "rounds",
                "median s",
                "jobs/s",
                "speed-up vs raw (median of per-round ratios)",
                "API calls (last round)",
            ],
            summary_rows,
        )
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1, default=str)


if __name__ == "__main__":
    main()
