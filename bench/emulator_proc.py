"""An emulator in its own process for the benchmarks (see bench.common.EmulatorProcess).

Prints one JSON line ``{"url", "region", "listed", "now"}`` when ready, then answers
commands on stdin, one JSON line each:

- ``latency <ms>``: set Faults(latency_ms=...)
- ``calls``: requests per operation so far
- ``busy``: seconds the emulator spent answering (dispatch): ``wall`` (at least one
  request in hand) and per operation (overlapping)
- ``reset``: zero both counters
- ``advance <seconds>``: move the (frozen) world clock forward
- ``add <n> <since_iso>``: world.add_random_jobs(n, since=...)
- ``now``: the world clock

Exits when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import signer_sync.emulator.server as server_module
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World

_busy: Counter[str] = Counter()
_busy_lock = threading.Lock()
_active = [0, 0.0]  # requests being answered, when that count last rose from zero
_dispatch = server_module.dispatch


def _timed_dispatch(world: World, operation: str, *args: Any, **kwargs: Any) -> Any:
    """dispatch, timed: ``busy["wall"]`` is the time during which at least one request was
    being answered (concurrent requests are not counted twice); ``busy[operation]`` sums
    each request's own time (overlapping)."""
    start = time.perf_counter()
    with _busy_lock:
        if _active[0] == 0:
            _active[1] = start
        _active[0] += 1
    try:
        return _dispatch(world, operation, *args, **kwargs)
    finally:
        end = time.perf_counter()
        with _busy_lock:
            _busy[operation] += end - start
            _active[0] -= 1
            if _active[0] == 0:
                _busy["wall"] += end - _active[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    server_module.dispatch = _timed_dispatch  # type: ignore[assignment]
    world = World(seed=args.seed, frozen=True)  # frozen: a re-backfill finds nothing changed
    world.seed_organisation(args.jobs)
    server = EmulatorServer(world, faults=Faults(latency_ms=args.latency_ms)).start()
    ready = {
        "url": server.url,
        "region": world.region,
        "listed": len(world.listed_jobs()),
        "now": world.now.isoformat(),
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        answer: Any
        if words[0] == "latency":
            server.faults = Faults(latency_ms=float(words[1]))
            answer = {"latency_ms": float(words[1])}
        elif words[0] == "calls":
            answer = dict(server.calls)
        elif words[0] == "busy":
            with _busy_lock:
                answer = dict(_busy)
        elif words[0] == "reset":
            server.reset_counters()
            with _busy_lock:
                _busy.clear()
            answer = {}
        elif words[0] == "advance":
            world.advance(timedelta(seconds=float(words[1])))
            answer = {"now": world.now.isoformat()}
        elif words[0] == "add":
            made = world.add_random_jobs(int(words[1]), since=datetime.fromisoformat(words[2]))
            answer = {"added": len(made), "now": world.now.isoformat()}
        elif words[0] == "now":
            answer = {"now": world.now.isoformat()}
        else:
            answer = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(answer), flush=True)
    server.stop()


if __name__ == "__main__":
    main()
