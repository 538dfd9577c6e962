"""A threaded HTTP/1.1 server that answers boto3's Signer calls from a World.

Besides the API itself it can inject the failures a real network and a real AWS
produce (throttling, 5xx, latency, resets, truncated or garbled bodies, hangs, rejected
page tokens), so the sync's retry and resume logic can be tested without AWS.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from signer_sync.emulator.api import ApiError, dispatch, error_body, route
from signer_sync.emulator.world import World

__all__ = ["EmulatorServer", "Faults"]

_UNKNOWN = "UnknownOperation"


@dataclass
class Faults:
    """Failure injection knobs; mutable while the server runs.

    Rates are probabilities per request, drawn from ``random.Random(seed)``. The
    ``*_next`` fields count upcoming responses to damage and are decremented as used:
    ``reset_next`` closes the connection (TCP RST) without answering; ``truncate_next``
    sends the full Content-Length but only half the body, then closes; ``invalid_json_next``
    sends a 200-style body that is not JSON; ``hang_next`` waits ``hang_seconds`` before
    answering; ``reject_token_next`` answers "Invalid nextToken" to the next request that
    carries a nextToken. Assigning a new Faults object to the server reseeds its RNG.
    """

    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int = 0
    reset_next: int = 0
    truncate_next: int = 0
    invalid_json_next: int = 0
    hang_next: int = 0
    hang_seconds: float = 30.0
    reject_token_next: int = 0


@dataclass
class _Plan:
    """What the fault injector decided for one request."""

    latency: float = 0.0
    reset: bool = False
    hang: float = 0.0
    error: ApiError | None = None
    damage: str | None = None  # "truncate" | "invalid_json"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    emulator: EmulatorServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients that time out or reset are routine in fault tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SignerEmulator/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging; tests issue thousands of requests."""

    @property
    def emulator(self) -> EmulatorServer:
        return cast(_HTTPServer, self.server).emulator

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every keep-alive request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.emulator._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.emulator._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        emulator = self.emulator
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        matched = route(self.command, split.path)
        operation = matched[0] if matched else _UNKNOWN
        plan = emulator._plan(operation, has_token="nextToken" in query)
        if plan.latency > 0:
            emulator._stopping.wait(plan.latency)
        if plan.reset:
            self._reset()
            return
        if plan.hang > 0:
            emulator._stopping.wait(plan.hang)
        if plan.error is not None:
            status, body, code = self._error(plan.error)
        elif matched is None:
            status, body, code = self._error(
                ApiError("UnknownOperationException", f"No route for {self.command} {split.path}")
            )
        else:
            try:
                status, body, code = (
                    200,
                    dispatch(emulator.world, operation, matched[1], query),
                    None,
                )
            except ApiError as exc:
                status, body, code = self._error(exc)
            except Exception as exc:  # noqa: BLE001 - an emulator bug should be a 500, not a hangup
                status, body, code = self._error(
                    ApiError("InternalServiceErrorException", f"emulator bug: {exc!r}")
                )
        self._send(status, json.dumps(body).encode(), code, plan.damage)

    @staticmethod
    def _error(exc: ApiError) -> tuple[int, dict[str, Any], str]:
        return exc.status, error_body(exc.code, exc.message), exc.code

    def _send(self, status: int, payload: bytes, code: str | None, damage: str | None) -> None:
        if damage == "invalid_json":
            payload = payload[: len(payload) // 2] + b"<!-- upstream proxy error -->"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if code is not None:
            self.send_header("x-amzn-ErrorType", code)
        self.end_headers()
        if damage == "truncate":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Like the base class, minus the per-request log line."""
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())
        self.send_header("Date", formatdate(usegmt=True))

    def _reset(self) -> None:
        """Abort the connection with a TCP RST, as a crashing load balancer would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


class EmulatorServer:
    """Serve a World on a local port; usable as a context manager.

    ``calls`` counts requests per operation name (``UnknownOperation`` for unknown
    routes), including those answered with an injected fault. ``errors`` counts
    injected faults: API errors by code (``TooManyRequestsException``,
    ``InternalServiceErrorException``, ``ValidationException`` for rejected tokens) and
    network faults as ``reset``, ``truncate``, ``invalid_json``, ``hang``.
    """

    def __init__(
        self,
        world: World,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.world = world
        self.host = host
        self.port = port
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._faults = faults if faults is not None else Faults()
        self._rng = random.Random(self._faults.seed)  # noqa: S311 - reproducible faults
        self._rng_seed = self._faults.seed
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ----------------------------------------------------------------- config

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        with self._lock:
            self._faults = value
            self._rng = random.Random(value.seed)  # noqa: S311 - reproducible faults
            self._rng_seed = value.seed

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"http://{shown}:{port}"

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.errors.clear()

    # -------------------------------------------------------------- lifecycle

    def start(self) -> EmulatorServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.emulator = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"signer-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any hanging handlers and drop keep-alive connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------- internals

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _take(self, name: str) -> bool:
        """Consume one unit of a ``*_next`` counter (caller holds the lock)."""
        remaining = int(getattr(self._faults, name))
        if remaining > 0:
            setattr(self._faults, name, remaining - 1)
            return True
        return False

    def _plan(self, operation: str, *, has_token: bool) -> _Plan:
        """Count the request and decide, atomically, which faults it gets."""
        with self._lock:
            faults = self._faults
            if faults.seed != self._rng_seed:
                self._rng = random.Random(faults.seed)  # noqa: S311 - reproducible faults
                self._rng_seed = faults.seed
            self.calls[operation] += 1
            plan = _Plan(latency=max(faults.latency_ms, 0.0) / 1000)
            if self._take("reset_next"):
                self.errors["reset"] += 1
                plan.reset = True
                return plan
            if self._take("hang_next"):
                self.errors["hang"] += 1
                plan.hang = max(faults.hang_seconds, 0.0)
            roll = self._rng.random()
            if roll < faults.throttle_rate:
                plan.error = ApiError("TooManyRequestsException", "Rate exceeded")
            elif roll < faults.throttle_rate + faults.error_rate:
                plan.error = ApiError("InternalServiceErrorException", "An internal error occurred")
            elif has_token and self._take("reject_token_next"):
                plan.error = ApiError("ValidationException", "Invalid nextToken")
            if plan.error is not None:
                self.errors[plan.error.code] += 1
            if self._take("truncate_next"):
                self.errors["truncate"] += 1
                plan.damage = "truncate"
            elif self._take("invalid_json_next"):
                self.errors["invalid_json"] += 1
                plan.damage = "invalid_json"
            return plan
