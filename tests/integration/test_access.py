"""Named principals through the whole application: the session's service redeployed with a
tokens file (and closed reads, as the prod overlay has them). A team token scores its
models and is refused on the others; admin on `fraud-card-*` promotes a card model through
the CLI but not an ACH one; the history names who promoted; a wrong token is a 401."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from ray import serve

from serve_app.serving.app import build_app
from serve_app.settings import APP_NAME
from tests.conftest import ADMIN_TOKEN, http_ready, service_args, wait_until
from tests.integration.helpers import call, records_payload, tables_adopted, v2_payload
from tests.integration.test_rollouts import cli, register_challenger

CARD_TOKEN = "card-team-integration-token"
ACH_TOKEN = "ach-scorer-integration-token"
PROMOTED = "fraud-card-mena"  # no other test changes its versions
OTHERS = "fraud-ach-us"


def redeploy(service, args: dict) -> None:
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    wait_until(lambda: http_ready(service.url), timeout=120, what="the redeployed service")
    tables_adopted(service.url, timeout=60, headers=as_(ADMIN_TOKEN))


@pytest.fixture(scope="module")
def teams(service, tmp_path_factory) -> Iterator[None]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.yaml"
    tokens.write_text(
        "principals:\n"
        "  - name: card-team\n"
        f"    token_sha256: {hashlib.sha256(CARD_TOKEN.encode()).hexdigest()}\n"
        '    scopes: ["score:fraud-card-*", "admin:fraud-card-*"]\n'
        "  - name: ach-scorer\n"
        f"    token: {ACH_TOKEN}\n"
        "    scopes: [score:fraud-ach-*]\n"
    )
    args = service_args(service.home)
    args["admin"] = {"tokens_file": str(tokens), "reads_need_token": True}
    redeploy(service, args)
    try:
        yield
    finally:
        redeploy(service, service_args(service.home))


def as_(token: str | None) -> dict:
    return {"authorization": f"Bearer {token}"} if token else {}


def infer(service, model: str, token: str | None) -> tuple[int, dict]:
    status, body, _ = call(f"{service.url}/v2/models/{model}/infer", v2_payload(), None, as_(token))
    return status, body


def test_a_team_token_scores_its_models_and_is_refused_on_the_others(service, teams):
    assert infer(service, "fraud-card-eu", CARD_TOKEN)[0] == 200
    status, body = infer(service, OTHERS, CARD_TOKEN)
    assert status == 403 and "'card-team' has no 'score' scope" in body["error"], body
    assert infer(service, OTHERS, ACH_TOKEN)[0] == 200
    mlflow = f"{service.url}/models/fraud-card-uk/invocations"
    assert call(mlflow, records_payload(), None, as_(ACH_TOKEN))[0] == 403
    assert call(mlflow, records_payload(), None, as_(CARD_TOKEN))[0] == 200
    labels = {"labels": [{"request_id": "r-1", "label": 1}]}
    feedback = f"{service.url}/v2/models/{OTHERS}/feedback"
    assert call(feedback, labels, None, as_(CARD_TOKEN))[0] == 403
    # the single admin token holds admin:*, not score:* (as before the tokens file)
    assert infer(service, "fraud-card-eu", ADMIN_TOKEN)[0] == 403


def test_a_missing_or_wrong_token_is_401_and_not_echoed(service, teams):
    for token in (None, "not-a-token-anyone-holds"):
        status, body = infer(service, "fraud-card-eu", token)
        assert status == 401, body
        assert "not-a-token" not in json.dumps(body)
    done = cli(service, "promote", PROMOTED, token="not-a-token-anyone-holds")
    assert done.returncode == 1 and "401" in done.stderr
    assert "not-a-token" not in done.stderr


def test_admin_on_card_models_promotes_one_and_the_history_names_the_team(service, teams, tmp_path):
    new = register_challenger(service, tmp_path, PROMOTED)
    history = f"{service.url}/admin/models/{PROMOTED}/history"

    def events() -> list[dict]:
        status, body, _ = call(history, headers=as_(CARD_TOKEN))
        assert status == 200, body
        return body["events"]

    wait_until(
        lambda: any(e["kind"] == "gate_passed" and e["version"] == new for e in events()),
        timeout=60,
        what="the challenger's gate",
    )
    refused = cli(service, "promote", OTHERS, token=CARD_TOKEN)
    assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
    done = cli(service, "promote", PROMOTED, token=CARD_TOKEN)
    assert done.returncode == 0, done.stderr
    manual = [e for e in events() if e["kind"] == "manual_promote"]
    assert [(e["version"], e["principal"]) for e in manual] == [(new, "card-team")]
    shown = cli(service, "history", PROMOTED, token=CARD_TOKEN)
    assert shown.returncode == 0 and "(by card-team)" in shown.stdout, shown.stdout
    assert call(f"{service.url}/admin/models/{OTHERS}/history", headers=as_(CARD_TOKEN))[0] == 403
    assert call(history, headers=as_(ACH_TOKEN))[0] == 403  # score grants no reads


def test_fleet_reads_show_only_the_models_a_principal_may_read(service, teams):
    status, body, _ = call(f"{service.url}/admin/models", headers=as_(CARD_TOKEN))
    assert status == 200 and body["models"], body
    assert all(name.startswith("fraud-card-") for name in body["models"])
    everything = call(f"{service.url}/admin/models", headers=as_(ADMIN_TOKEN))[1]["models"]
    assert set(body["models"]) < set(everything)
    assert call(f"{service.url}/admin/models", headers=as_(ACH_TOKEN))[0] == 403
    assert call(f"{service.url}/admin/models")[0] == 401
