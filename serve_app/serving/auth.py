"""Bearer tokens for the admin API (required to change anything) and, optionally, scoring.

Tokens come from an environment variable or a secret file (`*_FILE`, as Kubernetes
mounts secrets). With no admin token configured the changing endpoints are disabled,
not open. Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from serve_app.protocol.errors import Forbidden, Unauthorized

ADMIN_TOKEN_ENV = "SERVE_APP_ADMIN_TOKEN"
SCORING_TOKEN_ENV = "SERVE_APP_SCORING_TOKEN"


def load_token(env: str) -> str | None:
    """The token in `$ENV`, else in the file named by `$ENV_FILE`, else None."""
    token = os.environ.get(env)
    if not token and os.environ.get(f"{env}_FILE"):
        token = Path(os.environ[f"{env}_FILE"]).read_text().strip()
    return token or None


def require_admin(authorization: str | None, expected: str | None) -> None:
    if expected is None:
        raise Forbidden(f"the admin API is disabled: set {ADMIN_TOKEN_ENV} to enable it")
    _check_bearer(authorization, expected, "admin")


def require_reader(authorization: str | None, expected: str | None, needed: bool) -> None:
    """The admin API's reads: open, unless the settings close them behind the admin token."""
    if needed:
        require_admin(authorization, expected)


def require_scoring(authorization: str | None, expected: str | None) -> None:
    if expected is not None:  # scoring is open unless a scoring token is configured
        _check_bearer(authorization, expected, "scoring")


def _check_bearer(authorization: str | None, expected: str, what: str) -> None:
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized(f"the {what} API needs an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized(f"the {what} token is not valid")
