"""Shared helpers for the benchmarks: synthetic jobs, scratch warehouses, medians."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text

from signer_sync.config import Settings, SourceConfig, load_settings
from signer_sync.emulator.world import World
from signer_sync.records import SigningJob, map_list_item
from signer_sync.source import SignerApi
from signer_sync.sync import SourceSync
from signer_sync.warehouse.db import make_engine, migrate

PG_URL = os.environ.get(
    "SIGNER_SYNC_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def synthetic_jobs(count: int, seed: int = 1) -> tuple[World, list[SigningJob]]:
    """``count`` mapped signing jobs from a seeded emulated organisation."""
    world = World(seed=seed, frozen=True)
    world.seed_organisation(count)
    items = world.listed_items()
    jobs = [map_list_item(item, region=world.region, source="bench") for item in items]
    return world, [job for job in jobs if isinstance(job, SigningJob)]


@contextmanager
def scratch_warehouse(**overrides: Any) -> Iterator[tuple[Settings, Any]]:
    """A migrated PostgreSQL schema, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        environ={"SIGNER_SYNC_DATABASE_URL": PG_URL, "SIGNER_SYNC_DB_SCHEMA": schema}, **overrides
    )
    engine = make_engine(settings)
    migrate(engine, settings)
    try:
        yield settings, engine
    finally:
        engine.dispose()
        admin = create_engine(PG_URL)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- added for the benchmark suite --------------------------------------------------------

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHBENCHBENCH0",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-not-real",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


def dummy_aws_env() -> None:
    """Point boto3 at dummy credentials (the emulator does not check them)."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in AWS_ENV:
            del os.environ[name]
    os.environ.update(AWS_ENV)


class EmulatorProcess:
    """An emulator serving a seeded world in ANOTHER process (``bench.emulator_proc``), so
    its CPU work and memory are not the measured process's. Latency can be changed while
    it runs; request counts can be read."""

    def __init__(self, jobs: int, *, seed: int = 1, latency_ms: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.emulator_proc",
                "--jobs",
                str(jobs),
                "--seed",
                str(seed),
                "--latency-ms",
                str(latency_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(self._read())
        self.url: str = ready["url"]
        self.region: str = ready["region"]
        self.listed: int = ready["listed"]
        self.now: str = ready["now"]

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited")
        return line

    def command(self, line: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read())

    def set_latency(self, latency_ms: float) -> None:
        self.command(f"latency {latency_ms}")

    def calls(self) -> dict[str, int]:
        return dict(self.command("calls"))

    def busy(self) -> dict[str, float]:
        """Seconds the emulator spent answering, per operation."""
        return dict(self.command("busy"))

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_source_sync(
    settings: Settings,
    engine: Any,
    url: str,
    region: str,
    *,
    name: str = "bench",
    requests_per_second: float = 10_000,
    clock: Callable[[], Any] | None = None,
) -> SourceSync:
    """A SourceSync of the emulator at ``url`` (as tests/conftest.py's make_sync does)."""
    import boto3

    source = SourceConfig(
        name=name, region=region, endpoint_url=url, requests_per_second=requests_per_second
    )
    api = SignerApi(source, settings, session=boto3.Session())
    kwargs: dict[str, Any] = {"api": api}
    if clock is not None:
        kwargs["clock"] = clock
    return SourceSync(settings, source, engine, **kwargs)


class PeakRss:
    """Samples a process's RSS in a thread (psutil); ``peak`` in bytes. Use as a context
    manager around the measured work. Also reads VmHWM (exact peak) on Linux."""

    def __init__(self, pid: int | None = None, interval: float = 0.01) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a process in bytes, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def mib(value: float) -> float:
    return value / (1024 * 1024)


def fmt_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (also readable on a terminal)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join(lines)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def publish(headers: list[str], rows: list[list[Any]], results: Any, json_path: str | None) -> None:
    """Print the results table and, if asked, write the raw measurements as JSON."""
    print(fmt_table(headers, rows))
    if json_path:
        with open(json_path, "w") as out:
            json.dump(results, out, indent=1)
