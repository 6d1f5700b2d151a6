"""The CLI's admin commands when the service is down: one clear line, no traceback."""

from __future__ import annotations

import pytest

from serve_app.cli import main
from serve_app.proxy_env import free_port


@pytest.mark.parametrize(
    "command",
    [
        ["promote", "m"],
        ["rollback", "m"],
        ["canary", "m", "--weight", "5"],
        ["history", "m"],
        ["drift", "m"],
        ["retrain", "m"],
        ["export-state"],
    ],
)
def test_admin_commands_say_the_service_is_unreachable(command, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main([*command, "--url", url]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"serve-app is not reachable at {url}: ")
    assert "Traceback" not in error and error.count("\n") == 1
