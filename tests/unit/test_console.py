"""The operator console's files and data: the fixed file table behind /ui (content types,
caching, no way out of it), the package that ships it, every model's recent traffic, the
guard readings the model view shows, and the last event per model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serve_app.core.fleet import RecentTraffic
from serve_app.core.rollout import guard_breach, guard_readings
from serve_app.core.routing import ModelRoute
from serve_app.core.stats import VersionWindow
from serve_app.history import Event, EventLog
from serve_app.metrics import ScoringMetrics
from serve_app.protocol.errors import NotFound
from serve_app.serving import http, static
from serve_app.serving.asgi import HttpRequest
from serve_app.serving.observe import Observer
from serve_app.settings import RolloutPolicy

ROOT = Path(__file__).parents[2]
CONSOLE = ROOT / "serve_app" / "console"


def get(path: str, headers: dict[str, str] | None = None):
    """What the router answers to GET `path` for the console (its dispatch, without Ray)."""
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    request = HttpRequest({"method": "GET", "path": path, "headers": raw}, None)
    found = http.match("GET", path)
    assert found.handler == "console"
    return static.answer(request, found.name)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/console.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
    ],
)
def test_each_file_is_served_with_its_type_and_caching_headers(path, content_type):
    reply = get(path)
    assert reply.status == 200 and reply.content_type == content_type
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    name = path.removeprefix("/ui").strip("/") or "index.html"
    assert reply.body == (CONSOLE / name).read_bytes()


def test_an_unchanged_file_is_a_304_and_a_changed_etag_gets_the_file():
    etag = get("/ui/fleet.js").headers["etag"]
    assert get("/ui/fleet.js", {"if-none-match": etag}).status == 304
    assert get("/ui/fleet.js", {"if-none-match": etag}).body == b""
    assert get("/ui/fleet.js", {"if-none-match": '"old"'}).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../settings.py",
        "/ui/../../etc/passwd",
        "/ui/..",
        "/ui/.",
        "/ui//etc/passwd",
        "/ui/%2e%2e%2fsettings.py",
        "/ui/..%2fsettings.py",
        "/ui/console/../../cli.py",
        "/ui/__init__.py",
        "/ui/nothing.js",
        "/ui/C:%5Cwindows",
    ],
)
def test_no_path_reaches_outside_the_shipped_files(path):
    with pytest.raises(NotFound):
        found = http.match("GET", path)
        static.answer(HttpRequest({"method": "GET", "path": path, "headers": []}, None), found.name)


def test_the_page_loads_only_shipped_files_and_every_module_import_resolves():
    index = (CONSOLE / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="/ui/([^"]+)"', index)
    assert {"console.js", "console.css"} <= set(referenced)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', index)  # no CDN
    for script in CONSOLE.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert imported in static.ASSETS, f"{script.name} imports a file not shipped"
    assert set(referenced) <= set(static.ASSETS)


def test_the_package_build_ships_the_console(tmp_path):
    """setuptools' build step (what a wheel and an install copy) puts every file in."""
    subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
         "--build-lib", str(tmp_path)],
        check=True, capture_output=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    built = {p.name for p in (tmp_path / "serve_app" / "console").iterdir()}
    assert built == set(static.ASSETS)


def window(requests: int, latency_ms: float = 1.0, errors: int = 0, score: float = 0.1):
    w = VersionWindow()
    for n in range(requests):
        w.record(latency_ms, np.array([score]), error=n < errors)
    return w


def test_recent_traffic_covers_the_last_minute_per_version_and_says_its_window():
    recent = RecentTraffic(started=1_000.0)
    recent.add(1_005.0, "m", {1: window(50)})
    early = recent.summary("m", 1_010.0)
    assert early["window_s"] == 10.0  # only since the start
    assert early["requests"] == 50 and early["requests_per_s"] == 5.0
    recent.add(1_055.0, "m", {1: window(40), 2: window(10, latency_ms=30.0, errors=5)})
    later = recent.summary("m", 1_059.0)
    assert later["requests"] == 100 and later["versions"][2]["error_rate"] == 0.5
    assert later["versions"][2]["p99_ms"] == 50 and later["versions"][1]["p99_ms"] == 1
    assert later["versions"][1]["score_bins"][1] == 90
    gone = recent.summary("m", 1_105.0)  # the first bucket (1000-1010) is out of the span
    assert gone["requests"] == 50 and 50.0 <= gone["window_s"] <= 60.0
    idle = recent.summary("other", 1_125.0)
    assert idle["requests"] == 0 and idle["p99_ms"] is None and idle["error_rate"] is None
    recent.forget("m")
    assert recent.summary("m", 1_125.0)["versions"] == {}


def test_the_router_keeps_recent_windows_for_every_model_not_only_rollouts():
    observer = Observer(ScoringMetrics())
    route = ModelRoute("m", 3, ("f",))  # no challenger: no rollout window
    observer.request(route, 3, 200, 2.0, np.array([0.95]), loaded_here=False)
    observer.request(route, 3, 500, 9.0, None, loaded_here=True)
    observer.request(route, 3, 422, 1.0, None, loaded_here=False)  # the client's fault
    traffic, windows, recent = observer.drain()
    assert traffic == {"m": 3} and windows == {}
    assert recent["m"][3].requests == 2 and recent["m"][3].errors == 1
    assert recent["m"][3].scores[9] == 1
    assert observer.drain()[2] == {}


def test_guard_readings_are_what_the_breach_decision_acts_on():
    policy = RolloutPolicy(guard_min_requests=10, guard_min_scores=10)
    champion, slow = window(200, latency_ms=1.0), window(200, latency_ms=100.0, score=0.9)
    errors, latency, drift = guard_readings(policy, champion, slow)
    assert latency.judged and latency.breached and latency.limit == 1 * 3.0 + 2.0
    assert drift.judged and drift.breached and not errors.breached
    assert guard_breach(policy, champion, slow).kind == "latency"
    few = guard_readings(policy, champion, window(5, latency_ms=100.0))
    assert not any(g.judged or g.breached for g in few)
    assert guard_breach(policy, champion, window(5, latency_ms=100.0)) is None


def test_the_last_event_of_every_model_in_one_query(tmp_path):
    log = EventLog(f"sqlite:///{tmp_path / 'history.db'}", retention_days=400)
    events = [(1.0, "a", "gate_passed"), (2.0, "b", "served"), (3.0, "a", "promoted")]
    for at, model, kind in events:
        log.append(Event(at, model, kind, "", 2))
    latest = log.latest()
    assert {m: e.kind for m, e in latest.items()} == {"a": "promoted", "b": "served"}
    assert latest["a"] == Event(3.0, "a", "promoted", "", 2)
