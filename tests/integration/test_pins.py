"""The pins file against the real registry and the running service: a pin outranks the
aliases, its disagreement with @champion is reported, removing it hands the model back to
the aliases, a pin to a missing version keeps the last good one, a malformed file keeps
the last good pins; and `serve-app export-state` writes what /admin/models says."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from serve_app.registry.seed import DEMO_MODELS, seed_model
from tests.conftest import ADMIN_TOKEN, PINS_FILE, wait_until
from tests.integration.helpers import call, exported, tables_adopted, v2_payload

CLI = str(Path(sys.executable).with_name("serve-app"))
PINNED, MISSING, EXPORTED = DEMO_MODELS[15], DEMO_MODELS[16], DEMO_MODELS[17]
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def status(service) -> dict:
    return call(f"{service.url}/admin/models")[1]


def model(service, name: str) -> dict:
    return status(service)["models"][name]


def kinds(service, name: str) -> list[str]:
    events = call(f"{service.url}/admin/models/{name}/history")[1]["events"]
    return [e["kind"] for e in events]


def answering(service, name: str, requests: int = 20) -> set[str]:
    url = f"{service.url}/v2/models/{name}/infer"
    return {call(url, v2_payload(), headers={"x-routing-key": f"k{n}"})[2]["x-model-version"]
            for n in range(requests)}  # fmt: skip


@pytest.fixture
def pins(service) -> Iterator[Callable[[dict[str, int]], None]]:
    """Write the session's pins file; empty it again (and wait for that) afterwards."""
    path = service.home / PINS_FILE

    def write(mapping: dict[str, int]) -> None:
        path.write_text(yaml.safe_dump({"pins": mapping}))

    yield write
    path.write_text("pins: {}\n")
    wait_until(
        lambda: status(service)["pins"]["pinned"] == {} and not status(service)["pins"]["error"],
        timeout=15,
        what="the pins to be cleared",
    )


def test_a_pin_outranks_the_aliases_is_reported_and_removing_it_returns_to_them(service, pins):
    name = PINNED
    pins({name: 1})
    wait_until(lambda: model(service, name)["pin"], timeout=15, what="the pin to be read")
    assert model(service, name)["pin"]["agrees"]
    newer = seed_model(service.registry, name, alias=None, salt="pinned-newer")
    candidate = seed_model(service.registry, name, alias=None, salt="pinned-candidate")
    service.registry.set_alias(name, "champion", newer)
    service.registry.set_alias(name, "challenger", candidate)

    pin = wait_until(
        lambda: (p := model(service, name)["pin"]) and not p["agrees"] and p, timeout=15,
        what="the disagreement to be reported",
    )  # fmt: skip
    assert pin["disagreement"] == f"pinned to v1; @champion is v{newer}"
    assert pin["serving"] and pin["challenger_ignored"] == candidate
    serving = model(service, name)["serving"]
    assert (serving["champion"], serving["challenger"]) == (1, None)
    tables_adopted(service.url)
    assert answering(service, name) == {"1"}, "the pinned version answers every request"
    history = kinds(service, name)
    assert {"pin_set", "pin_disagrees", "challenger_ignored"} <= set(history), history
    since_pinned = history[history.index("pin_set") :]  # earlier tests may redeploy the app
    assert "gate_passed" not in since_pinned and "champion_serving" not in since_pinned
    wait_until(
        lambda: exported("ray_serve_app_pin_disagrees", model=name) == 1,
        timeout=30, interval=1, what="the serve_app_pin_disagrees gauge",
    )  # fmt: skip

    for action, body in (("promote", {}), ("rollback", {}), ("canary", {"weight": 10})):
        code, answer, _ = call(
            f"{service.url}/admin/models/{name}/{action}", body, method="POST", headers=ADMIN
        )
        assert code == 409 and "is pinned to v1 by the pins file" in answer["error"], answer

    service.registry.delete_alias(name, "challenger")
    pins({})
    wait_until(
        lambda: model(service, name)["serving"]["champion"] == newer, timeout=15,
        what="@champion to serve again once unpinned",
    )  # fmt: skip
    assert model(service, name)["pin"] is None
    tables_adopted(service.url)
    assert answering(service, name) == {str(newer)}
    history = kinds(service, name)
    assert history.index("pin_removed") < len(history) - history[::-1].index("champion_serving")
    wait_until(
        lambda: exported("ray_serve_app_pin_disagrees", model=name) == 0,
        timeout=30, interval=1, what="the gauge to clear",
    )  # fmt: skip


def test_a_pin_to_a_missing_version_or_a_malformed_file_keeps_the_last_good(service, pins):
    name = MISSING
    failures = exported("ray_serve_app_model_load_failures_total", model=name)
    pins({name: 99})
    pin = wait_until(
        lambda: (p := model(service, name)["pin"]) and p["problem"] and p, timeout=15,
        what="the missing version to be reported",
    )  # fmt: skip
    assert pin["problem"].startswith("pinned v99 does not exist in the registry; v1 serves")
    assert not pin["serving"] and model(service, name)["serving"]["champion"] == 1
    assert answering(service, name) == {"1"}
    assert "pin_unservable" in kinds(service, name)
    assert model(service, name)["failed_versions"] == {}, "a missing version is no load failure"

    (service.home / PINS_FILE).write_text(f"pins:\n  {name}: 99\n  {name}: 1\n")
    error = wait_until(
        lambda: status(service)["pins"]["error"], timeout=15, what="the file error"
    )
    assert "given twice" in error
    assert status(service)["pins"]["pinned"] == {name: 99}, "the last good pins stay"
    assert model(service, name)["pin"]["version"] == 99
    assert "pins_file_error" in kinds(service, name)
    assert exported("ray_serve_app_model_load_failures_total", model=name) == failures


def test_export_state_writes_what_admin_models_says(service, pins, tmp_path):
    pins({EXPORTED: 1})
    wait_until(lambda: model(service, EXPORTED)["pin"], timeout=15, what="the pin to be read")
    out = tmp_path / "state.yaml"
    env = {**os.environ, "SERVE_APP_ADMIN_TOKEN": ADMIN_TOKEN}
    done = subprocess.run(
        [CLI, "export-state", "--url", service.url, "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    exported_state = yaml.safe_load(out.read_text())
    live = status(service)
    assert exported_state["registry_uri"] == live["registry_uri"]
    assert exported_state["app"] == "serve-app"
    assert exported_state["pins_file"]["path"] == str(service.home / PINS_FILE)
    assert list(exported_state["models"]) == sorted(live["models"])
    for name, state in exported_state["models"].items():
        serving = live["models"][name]["serving"] or {}
        assert state["champion"] == serving.get("champion"), name
        assert state["challenger"] == serving.get("challenger"), name
        assert state["pool"] == serving.get("pool"), name
        assert state["aliases"] == live["models"][name]["aliases"], name
        assert sum(state["weights"].values()) == (100.0 if serving else 0.0), name
    assert exported_state["models"][EXPORTED]["pin"]["version"] == 1
    assert exported_state["models"][EXPORTED]["pin"]["agrees"] is True
    assert exported_state["models"][DEMO_MODELS[0]]["pin"] is None
    printed = subprocess.run(
        [CLI, "export-state", "--url", service.url], capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip
    assert yaml.safe_load(printed.stdout)["models"] == exported_state["models"]
