"""A server's process tree from /proc: CPU seconds and resident memory, summed.

A server here is whatever one started command grew into: Ray's GCS, raylet, workers
and HAProxy under `serve-app up`; MLServer's workers; a single uvicorn process.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Clock ticks after boot when the process started: tells a PID from its reuse."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children[int(fields[1])].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is not None:
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def cpu_snapshot(pids: list[int]) -> dict[tuple[int, int], float]:
    """CPU seconds (user plus system) per live process, keyed by (pid, start time)."""
    found = {}
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            found[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


def cpu_delta(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """CPU spent between two snapshots; a process born in between counts in full."""
    return sum(seconds - before.get(key, 0.0) for key, seconds in after.items())


def rss_mb(pids: list[int]) -> float:
    """Summed resident set size: pages shared between processes count in each (upper bound)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * _PAGE / 2**20


def pss_mb(pids: list[int]) -> float:
    """Summed proportional set size: shared pages split between their users."""
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(
            (int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0
        )
    return total / 1024


ROUTER_REPLICA, CONTROLLER_REPLICA = "router replica", "serve-app controller"
MODEL_POOL_REPLICA = "model pool replica"
_TITLES = {
    "ray::ServeReplica:serve-app:Router": ROUTER_REPLICA,
    "ray::ServeReplica:serve-app:Controller": CONTROLLER_REPLICA,
}
_MODEL_POOL_TITLE = "ray::ServeReplica:serve-app:ModelPool-"
_COMMANDS = (
    ("haproxy", "HAProxy"),
    ("raylet", "raylet"),
    ("gcs_server", "GCS"),
    ("dashboard/agent", "dashboard agent"),
    ("runtime_env", "runtime env agent"),
    ("log_monitor", "log monitor"),
    ("serve-app", "serve-app up (driver)"),
)


def cmdline(pid: int) -> str:
    """The process's command line (Ray workers show their actor title), or ""."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def role(pid: int) -> str:
    """A readable role for a process of a Ray tree: a Serve replica, an actor, a daemon."""
    words = cmdline(pid).split()
    if not words:
        return "gone"
    if words[0].startswith(_MODEL_POOL_TITLE):
        return MODEL_POOL_REPLICA
    if words[0].startswith("ray::"):
        return _TITLES.get(words[0], words[0].removeprefix("ray::"))
    head = " ".join(words[:3])
    return next((name for needle, name in _COMMANDS if needle in head), Path(words[0]).name)


def pss_by_role(pids: list[int]) -> dict[str, float]:
    """PSS in MB summed per role (`role`), largest first: what each kind of process costs."""
    totals: dict[str, float] = defaultdict(float)
    for pid in pids:
        totals[role(pid)] += pss_mb([pid])
    return {name: round(mb, 1) for name, mb in sorted(totals.items(), key=lambda kv: -kv[1])}
