"""``python -m signer_sync.emulator``: the emulator without the main CLI."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from signer_sync.emulator.cli import serve


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m signer_sync.emulator", description="Local AWS Signer API emulator."
    )
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs to seed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    serve(
        port=args.port,
        host=args.host,
        jobs=args.jobs,
        seed=args.seed,
        latency_ms=args.latency_ms,
        throttle_rate=args.throttle_rate,
        error_rate=args.error_rate,
    )


if __name__ == "__main__":
    main()
