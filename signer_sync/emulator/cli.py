"""Run the emulator as a standalone process for demos and manual poking with the AWS CLI."""

from __future__ import annotations

import threading

from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World

__all__ = ["serve"]


def serve(
    port: int = 4566,
    host: str = "127.0.0.1",
    jobs: int = 5000,
    seed: int = 1,
    latency_ms: float = 0,
    throttle_rate: float = 0,
    error_rate: float = 0,
) -> None:
    """Seed a world, print how to reach it, and serve until Ctrl-C."""
    world = World(seed)
    world.seed_organisation(jobs)
    faults = Faults(
        throttle_rate=throttle_rate, error_rate=error_rate, latency_ms=latency_ms, seed=seed
    )
    server = EmulatorServer(world, host=host, port=port, faults=faults).start()
    print(f"AWS Signer emulator listening on {server.url} ({len(world.listed_jobs())} jobs listed)")
    print(
        f"  AWS_ENDPOINT_URL_SIGNER={server.url} AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x "
        "AWS_DEFAULT_REGION=us-east-1 aws signer list-signing-jobs --max-items 5"
    )
    print("Press Ctrl-C to stop.", flush=True)
    try:
        _block()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _block() -> None:
    """Sleep until interrupted (a separate function so tests can stand in for Ctrl-C)."""
    threading.Event().wait()
