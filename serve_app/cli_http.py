"""How the CLI talks to a running serve-app: JSON reads, admin actions with the token."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET JSON, with the admin token when there is one (a cluster may close its reads)."""
    from serve_app.serving.auth import ADMIN_TOKEN_ENV, load_token

    token = load_token(ADMIN_TOKEN_ENV)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def read_or_exit(base_url: str, path: str, timeout: float = 30.0) -> Any:
    """GET `base_url + path` as JSON; on an error answer or no answer, say why and exit 1."""
    try:
        return get_json(f"{base_url}{path}", timeout=timeout)
    except urllib.error.HTTPError as error:
        print(f"{error.code}: {json.loads(error.read()).get('error')}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        unreachable(base_url, error)
    raise SystemExit(1)


def admin(args: argparse.Namespace, action: str, body: dict[str, Any] | None = None) -> int:
    """POST an admin action for `args.name`; print its message or error."""
    from serve_app.serving.auth import ADMIN_TOKEN_ENV, load_token

    token = load_token(ADMIN_TOKEN_ENV)
    request = urllib.request.Request(
        f"{args.url}/admin/models/{args.name}/{action}",
        data=json.dumps(body or {}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token or ''}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            print(json.loads(answer.read())["message"])
            return 0
    except urllib.error.HTTPError as error:
        print(f"{error.code}: {json.loads(error.read()).get('error')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        return unreachable(args.url, error)


def unreachable(url: str, error: Exception) -> int:
    reason = getattr(error, "reason", error)
    print(f"serve-app is not reachable at {url}: {reason}", file=sys.stderr)
    return 1
