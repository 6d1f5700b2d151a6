"""`serve-app export-state`: the document built from /admin/models, and the command against a
small real HTTP server standing in for the service."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
import yaml

from serve_app.cli import main
from serve_app.cli_state import render, state_document, weights

STATUS = {
    "registry_uri": "sqlite:////tmp/mlflow.db",
    "cluster": {"app": "serve-app", "ray_address": "10.0.0.1:6379"},
    "controller_epoch": "abc",
    "table_revision": 7,
    "replicas": {},
    "last_poll": {"ok": True},
    "pins": {"file": "/etc/pins.yaml", "error": None, "read_at": 1.0, "pinned": {"m-b": 2}},
    "models": {
        "m-c": {"aliases": {"champion": 4}, "serving": None, "pin": None},
        "m-a": {
            "aliases": {"challenger": 6, "champion": 5},
            "serving": {
                "champion": 5,
                "challenger": 6,
                "challenger_weight": 25.0,
                "shadow": False,
                "pool": None,
                "standby": None,
            },
            "pin": None,
        },
        "m-b": {
            "aliases": {"champion": 3},
            "serving": {
                "champion": 2,
                "challenger": None,
                "challenger_weight": 0.0,
                "shadow": False,
                "pool": "onnxruntime-1-20",
                "standby": None,
            },
            "pin": {
                "version": 2,
                "agrees": False,
                "disagreement": "pinned to v2; @champion is v3",
                "serving": True,
                "problem": None,
                "challenger_ignored": None,
            },
        },
    },
}


def test_the_document_lists_models_by_name_with_versions_weights_pool_and_pins():
    document = state_document(STATUS, "http://svc:8000", 0.0)
    assert document["exported_at"] == "1970-01-01T00:00:00Z"
    assert (document["app"], document["ray_cluster"]) == ("serve-app", "10.0.0.1:6379")
    assert document["registry_uri"] == STATUS["registry_uri"]
    assert document["pins_file"] == {"path": "/etc/pins.yaml", "error": None}
    assert list(document["models"]) == ["m-a", "m-b", "m-c"]
    a, b, c = (document["models"][n] for n in ("m-a", "m-b", "m-c"))
    assert (a["champion"], a["challenger"], a["canary_weight"]) == (5, 6, 25.0)
    assert a["weights"] == {5: 75.0, 6: 25.0}
    assert list(a["aliases"]) == ["challenger", "champion"]
    assert b["pool"] == "onnxruntime-1-20" and b["weights"] == {2: 100.0}
    assert b["pin"] == {
        "version": 2,
        "agrees": False,
        "disagreement": "pinned to v2; @champion is v3",
        "serving": True,
        "problem": None,
    }
    assert c["champion"] is None and c["weights"] == {} and c["pin"] is None


@pytest.mark.parametrize(
    ("serving", "expected"),
    [
        ({"champion": 1, "challenger": None, "challenger_weight": 0.0}, {1: 100.0}),
        ({"champion": 1, "challenger": 2, "challenger_weight": 100.0}, {1: 0.0, 2: 100.0}),
        ({"champion": 3, "challenger": 2, "challenger_weight": 10.0}, {2: 10.0, 3: 90.0}),
        ({"champion": 1, "challenger": 2, "challenger_weight": 50.0, "shadow": True}, {1: 100.0}),
    ],
)
def test_weights_are_each_answering_versions_share(serving, expected):
    assert list(weights(serving).items()) == list(expected.items())


def test_two_exports_of_the_same_state_differ_only_in_their_time():
    shuffled = json.loads(json.dumps(STATUS))
    shuffled["models"] = dict(reversed(list(shuffled["models"].items())))
    first = render(state_document(STATUS, "u", 0.0)).splitlines()
    second = render(state_document(shuffled, "u", 99.0)).splitlines()
    assert [(x, y) for x, y in zip(first, second, strict=True) if x != y] == [
        ("exported_at: '1970-01-01T00:00:00Z'", "exported_at: '1970-01-01T00:01:39Z'")
    ]


@pytest.fixture
def fake_service():
    """A real HTTP server answering GET /admin/models with STATUS (and 403 to others)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/admin/models"
            body = json.dumps(STATUS if ok else {"error": "no"}).encode()
            self.send_response(200 if ok else 403)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_export_state_prints_yaml_or_writes_a_file(fake_service, tmp_path, capsys):
    assert main(["export-state", "--url", fake_service]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["models"] == state_document(STATUS, fake_service, 0.0)["models"]
    out = tmp_path / "state" / "serving.yaml"
    assert main(["export-state", "--url", fake_service, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out} (3 models)\n"
    assert yaml.safe_load(out.read_text())["models"] == printed["models"]
    assert [p.name for p in out.parent.iterdir()] == ["serving.yaml"], "no scratch file left"


def test_status_marks_pinned_models(fake_service, capsys):
    assert main(["status", "--url", fake_service]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["m-b"].endswith("pinned v2 (disagrees)")
    assert "pinned" not in lines["m-a"]
