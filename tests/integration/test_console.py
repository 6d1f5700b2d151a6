"""The operator console in a real browser (Debian's chromium driven by Playwright) against
the running service: the fleet lists every model, a canary started from the CLI shows its
step and weight, a wrong token is refused in the page, a rollback clicked in the page moves
the routing table, a phone-sized screen has no horizontal overflow; and the files over real
HTTP (types, 304, no traversal).

One browser for the module. `SERVE_APP_SCREENSHOTS=docs` writes the README's screenshots
(docs/console-fleet.png, docs/console-model.png); by default they go to a temporary folder.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from serve_app.registry.seed import DEMO_MODELS, demo_names
from serve_app.serving.controller import POLICY_TAG
from tests import needs
from tests.conftest import ADMIN_TOKEN, wait_until
from tests.integration.helpers import Traffic, call
from tests.integration.test_rollouts import cli, eval_rows, gate_verdict, register_challenger

MODEL = DEMO_MODELS[33]  # fraud-atm-apac: no other test rolls it out
SLOW = {"steps": [10, 50, 100], "step_dwell_s": 3_600}  # stays on its first step
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    executable = needs.tool("chromium", "apt-get install -y chromium chromium-driver")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs.missing("playwright", "pip install playwright==1.65.2 (the test extra)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("SERVE_APP_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("console-shots")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # every action asks first
    opened.set_default_timeout(30_000)
    yield opened
    context.close()


def row(page, name: str):
    return page.locator(f'#fleet-rows tr[data-model="{name}"]')


def enter_token(page, token: str) -> None:
    page.fill("#token", token)
    page.click("#token-save")


def test_the_fleet_lists_every_model_with_one_request_per_refresh(service, page):
    asked = []
    page.on("request", lambda r: asked.append(r) if "/admin/" in r.url else None)
    page.goto(f"{service.url}/ui/")
    served = call(f"{service.url}/admin/models")[1]["models"]
    wait_until(lambda: page.locator("#fleet-rows tr").count() == len(served), 30, what="rows")
    names = page.locator("#fleet-rows tr").evaluate_all("rows => rows.map(r => r.dataset.model)")
    assert set(DEMO_MODELS) <= set(names) and len(DEMO_MODELS) == 54
    assert page.locator("#shown").inner_text() == f"{len(served)} of {len(served)} models"
    assert [urlsplit(r.url).path for r in asked] == ["/admin/models"]
    page.fill("#search", "card-e")
    assert page.locator("#fleet-rows tr:not([hidden])").count() == 1  # fraud-card-eu
    page.fill("#search", "")
    page.select_option("#product", "atm")
    page.select_option("#region", "apac")
    visible = page.locator("#fleet-rows tr:not([hidden])")
    assert visible.count() == 1 and visible.get_attribute("data-model") == MODEL


def test_a_canary_started_from_the_cli_shows_its_step_then_its_weight(
    service, page, tmp_path, shots
):
    service.registry.set_model_tag(MODEL, POLICY_TAG, json.dumps(SLOW))
    version = register_challenger(service, tmp_path, MODEL)
    gate_verdict(service, MODEL, version)
    page.goto(f"{service.url}/ui/")
    rows = eval_rows(service, MODEL)  # real transactions: real score distributions
    with Traffic(service.url, MODEL, rows, workers=2, pause_s=0.01), Traffic(
        service.url, DEMO_MODELS[0], eval_rows(service, DEMO_MODELS[0]), workers=1, pause_s=0.05
    ):
        page.locator(f'#fleet-rows tr[data-model="{MODEL}"]').wait_for()
        page.wait_for_function(
            f"""() => {{
                const r = document.querySelector('#fleet-rows tr[data-model="{MODEL}"]');
                return r && r.innerText.includes('canary step 1/3')
                    && r.innerText.includes('90% / 10%');
            }}"""
        )
        assert f"v{version}" in row(page, MODEL).inner_text()
        done = cli(service, "canary", MODEL, "--weight", "30")
        assert done.returncode == 0, done.stderr
        page.wait_for_function(  # the next auto-refresh shows it
            f"""() => {{
                const r = document.querySelector('#fleet-rows tr[data-model="{MODEL}"]');
                return r && r.innerText.includes('manual') && r.innerText.includes('70% / 30%');
            }}""",
            timeout=15_000,
        )
        page.wait_for_function(  # the last minute's traffic is in the row
            f"""() => {{
                const r = document.querySelector('#fleet-rows tr[data-model="{MODEL}"]');
                const rate = r && r.querySelector('td[data-label="req/s"]').innerText;
                return rate && Number(rate) > 0;
            }}""",
            timeout=20_000,
        )
        page.screenshot(path=str(shots / "console-fleet.png"))
        page.click(f'#fleet-rows tr[data-model="{MODEL}"] a')
        page.wait_for_selector("#m-rollout .steps")
        page.wait_for_function("() => document.querySelectorAll('#m-scores svg').length > 0")
        assert "manual" in page.inner_text("#m-rollout")
        assert "score PSI" in page.inner_text("#m-rollout")
        assert "gate_passed" in page.inner_text("#m-history")
        assert "router replica" in page.inner_text("#m-placement")
        page.screenshot(path=str(shots / "console-model.png"), full_page=True)
    detail = call(f"{service.url}/admin/models/{MODEL}")[1]
    assert [g["kind"] for g in detail["guards"]] == ["error_rate", "latency", "drift"]
    assert detail["step"]["dwell_s"] == 3_600 and detail["rollout"]["weight"] == 30
    assert {1, version} <= {int(v) for v in detail["recent"]["versions"]}
    assert len(detail["recent"]["versions"][str(version)]["score_bins"]) == 10
    assert call(f"{service.url}/admin/models/fraud-nope-xx")[0] == 404


def test_a_wrong_token_is_refused_in_the_page_and_the_right_one_rolls_back(service, page):
    assert call(f"{service.url}/admin/models")[1]["models"][MODEL]["serving"]["challenger"]
    sent = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")))
    page.goto(f"{service.url}/ui/#/models/{MODEL}")
    page.wait_for_selector("#m-rollout .steps")
    enter_token(page, "not-the-token")
    page.click("#act-promote")
    page.wait_for_selector("#outcome:not([hidden])")
    assert "401" in page.inner_text("#outcome") and "token" in page.inner_text("#outcome")
    assert "Bearer not-the-token" in sent  # the data calls carry it too
    serving = call(f"{service.url}/admin/models")[1]["models"][MODEL]["serving"]
    assert serving["challenger"] is not None  # nothing moved
    enter_token(page, ADMIN_TOKEN)
    assert page.evaluate("sessionStorage.getItem('serve-app.admin-token')") == ADMIN_TOKEN
    page.click("#act-rollback")
    page.wait_for_function(
        "() => document.querySelector('#outcome').innerText.includes('rolled back challenger')"
    )
    serving = call(f"{service.url}/admin/models")[1]["models"][MODEL]["serving"]
    assert serving["challenger"] is None and serving["challenger_weight"] == 0.0
    page.wait_for_function(  # the page shows it (the view refreshes after the action)
        "() => document.querySelector('#m-history').innerText.includes('rolled_back')"
        " && document.querySelector('#m-rollout').innerText.includes('No rollout')"
    )
    page.click("#act-rollback")  # nothing left to roll back: the 409 is shown
    page.wait_for_function("() => document.querySelector('#outcome').innerText.includes('409')")
    page.goto(f"{service.url}/ui/")
    page.wait_for_function(
        f"""() => {{
            const r = document.querySelector('#fleet-rows tr[data-model="{MODEL}"]');
            return r && r.querySelector('td[data-label="split"]').innerText === '100%';
        }}"""
    )
    service.registry.delete_model_tag(MODEL, POLICY_TAG)


def test_five_hundred_models_render_from_one_request_reusing_rows(service, page):
    """The fleet of a large registry (500 models, the density benchmark's size), served to
    the page in place of the live answer: one request per refresh, rows kept across
    refreshes, and each render well within a refresh interval."""
    status = call(f"{service.url}/admin/models")[1]
    template = status["models"][DEMO_MODELS[0]]
    status["models"] = {name: template for name in demo_names(500)}
    body = json.dumps(status)
    asked, paths = [], []
    page.on("request", lambda r: paths.append(urlsplit(r.url).path) if "/admin" in r.url else None)

    def fulfil(route):
        asked.append(time.monotonic())
        route.fulfill(status=200, content_type="application/json", body=body)

    page.route("**/admin/models", fulfil)
    page.goto(f"{service.url}/ui/")
    page.wait_for_function("() => document.querySelectorAll('#fleet-rows tr').length === 500")
    page.evaluate("() => document.querySelector('#fleet-rows tr').dataset.marked = 'yes'")
    page.wait_for_function(  # two auto-refreshes (Playwright's calls run the route handler)
        "() => performance.getEntriesByName('fleet-render').length >= 3", timeout=20_000
    )
    renders = page.evaluate(
        "() => performance.getEntriesByName('fleet-render').map(m => m.duration)"
    )
    marked = page.evaluate("() => document.querySelector('#fleet-rows tr').dataset.marked")
    assert marked == "yes"  # the same row elements, not a rebuilt table
    assert max(renders) < 1_000, renders  # a refresh every 5 s
    assert set(paths) == {"/admin/models"}  # one request per refresh, none per model
    assert len(renders) <= len(asked) <= len(renders) + 1
    print(f"500-model fleet: first render {renders[0]:.0f} ms, refreshes {renders[1:]} ms")


def test_a_phone_sized_screen_has_no_horizontal_overflow(service, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        for view, ready in (
            ("", "#fleet-rows tr"),
            (f"#/models/{DEMO_MODELS[0]}", "#m-history tr"),
        ):
            phone.goto(f"{service.url}/ui/{view}")
            phone.wait_for_selector(ready)
            time.sleep(0.3)
            width = phone.evaluate(
                "() => [document.documentElement.scrollWidth, document.body.scrollWidth,"
                " window.innerWidth]"
            )
            assert max(width[:2]) <= width[2] == 390, (view, width)
            if not view:  # the filter hides rows on the phone's card layout too
                phone.fill("#search", "card-eu")
                names = call(f"{service.url}/admin/models")[1]["models"]
                expected = sum("card-eu" in name for name in names)
                assert phone.locator("#fleet-rows tr:visible").count() == expected
    finally:
        context.close()


def raw_get(url: str, path: str, headers: dict[str, str] | None = None):
    """GET a path exactly as written (no client-side normalising of `..`)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_the_files_over_http_have_types_etags_and_no_way_out(service):
    status, headers, body = raw_get(service.url, "/ui/console.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["x-content-type-options"] == "nosniff"
    assert raw_get(service.url, "/ui/console.js", {"if-none-match": headers["etag"]})[0] == 304
    status, headers, body = raw_get(service.url, "/ui")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in body
    for path in (
        "/ui/../serve_app/settings.py",
        "/ui/%2e%2e/settings.py",
        "/ui/..%2f..%2fpyproject.toml",
        "/ui/..",
        "/ui/%2e%2e",
        "/ui//etc/passwd",
    ):
        status, _, body = raw_get(service.url, path)
        assert status == 404, (path, status)
        assert b"pydantic" not in body and b"root:" not in body
