"""A PostgreSQL cluster of a test's own, on its own port under a temporary folder.

Started from the server binaries (on PATH, or Debian's `/usr/lib/postgresql/<version>/bin`);
without them the test skips, or fails under `CI=true` (`tests/needs.py`). PostgreSQL refuses
to run as root, so the cluster belongs to the `postgres` user.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.needs import missing, tool

POSTGRES_TOOLS = ("initdb", "pg_ctl", "createdb")
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")  # <version>/bin, not on PATH by default


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _version(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in folder.name.split(".") if part.isdigit())


def postgres_tools() -> dict[str, str]:
    """initdb, pg_ctl and createdb: all on PATH, else all from Debian's newest version."""
    versions = sorted(DEBIAN_POSTGRES.glob("*/bin"), key=lambda b: _version(b.parent))
    for path in (None, *map(str, reversed(versions))):
        found = {name: shutil.which(name, path=path) for name in POSTGRES_TOOLS}
        if all(found.values()):
            return {name: str(where) for name, where in found.items()}
    missing(
        "PostgreSQL server binaries (initdb, pg_ctl, createdb)",
        f"`apt-get install postgresql` (.ci/run does); looked on PATH and in {DEBIAN_POSTGRES}",
    )


@dataclass(frozen=True)
class Postgres:
    """A running cluster: user `postgres`, trust authentication, 127.0.0.1 only."""

    port: int
    folder: Path
    tools: dict[str, str]
    as_postgres: tuple[str, ...]

    def createdb(self, name: str) -> None:
        host = ("-h", "127.0.0.1", "-p", str(self.port))
        _run(*self.as_postgres, self.tools["createdb"], *host, name)

    def url(self, database: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> tuple[str, ...]:
        return (*self.as_postgres, self.tools["pg_ctl"], "-D", f"{self.folder}/db", *args)

    def start(self) -> None:
        """Start the server (again: same port, same data) and wait until it takes connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        _run(*self._pg_ctl("-o", options, "-l", f"{self.folder}/log", "-w", "start"))

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, as when the database host goes away."""
        _run(*self._pg_ctl("-m", "fast", "-w", "stop"))


@contextmanager
def postgres_cluster(port: int) -> Iterator[Postgres]:
    """initdb + pg_ctl start on `port`; stopped (fast) and removed on exit."""
    tools = postgres_tools()
    as_postgres = (tool("runuser", "`apt-get install util-linux`"), "-u", "postgres", "--")
    folder = Path(tempfile.mkdtemp(prefix="serve-app-pg-"))
    folder.chmod(0o755)
    shutil.chown(folder, "postgres")
    cluster = Postgres(port, folder, tools, as_postgres)
    try:
        _run(*as_postgres, tools["initdb"], "-D", f"{folder}/db", "-U", "postgres", "-A", "trust")
        cluster.start()
        try:
            yield cluster
        finally:  # a test may have stopped it already
            subprocess.run(cluster._pg_ctl("-m", "fast", "stop"), capture_output=True, timeout=120)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
