"""Start a server as a subprocess in its own session, wait until it answers, stop it for sure.

Stopping: the polite signal to the leader first (serve-app shuts Ray down on SIGINT),
then SIGTERM and SIGKILL to its process group, then SIGKILL to any descendant seen
while it ran that is still alive (same PID *and* start time, so never a reused PID).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import proctree


class ServerError(RuntimeError):
    pass


class ServerExited(ServerError):
    """The server's command ended before it was ready."""


@dataclass
class Server:
    name: str
    command: list[str]
    ready_url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout_s: float = 240.0
    stop_signal: int = signal.SIGINT
    stop_grace_s: float = 30.0
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    _seen: dict[int, int] = field(default_factory=dict)  # pid -> start time

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        port = urllib.parse.urlsplit(self.ready_url).port
        if port is not None and not port_is_free(port):
            raise ServerError(f"port {port} is taken (another run?): not starting {self.name}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        self.started_at = time.perf_counter()

    def start_until_ready(self, attempts: int = 2) -> float:
        """Start (a fresh log) and wait; a start that dies early is retried once per attempt.

        Ray Serve kills a proxy that is not ready within 5 s; on a starved 2-core machine
        that can make `serve.start` fail once. Returns seconds to ready of the last start.
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        for attempt in range(1, attempts + 1):
            self.start()
            try:
                return self.wait_ready()
            except ServerExited:
                self.stop()
                if attempt == attempts:
                    raise
                self.restarts += 1
        raise AssertionError("unreachable")

    def wait_ready(self) -> float:
        """Seconds from start until `ready_url` answered 200."""
        deadline = self.started_at + self.ready_timeout_s
        while time.perf_counter() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ServerExited(f"{self.name} exited early; see {self.log}")
            if _answers(self.ready_url):
                self.remember_tree()
                return time.perf_counter() - self.started_at
            time.sleep(0.25)
        raise ServerError(f"{self.name} not ready within {self.ready_timeout_s:.0f} s; {self.log}")

    def remember_tree(self) -> list[int]:
        """Note the current descendants (for stop) and return the tree's PIDs."""
        pids = proctree.tree(self.pid)
        for pid in pids:
            if (started := proctree.start_time(pid)) is not None:
                self._seen.setdefault(pid, started)
        return pids

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ServerError):
            self.remember_tree()
        leader = self.process
        if leader.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                leader.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                leader.wait(self.stop_grace_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(leader.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                leader.wait(5.0)
        for pid, started in self._seen.items():
            if proctree.start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process = None


def port_is_free(port: int) -> bool:
    """Nothing listens on `port`, on any interface."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running(server: Server, attempts: int = 2) -> Iterator[float]:
    """Start `server`, yield its seconds to ready, and stop it whatever happens."""
    try:
        yield server.start_until_ready(attempts)
    finally:
        server.stop()
