"""Bearer tokens: which principal a request comes from, and whether it may do what it asks.

The principals come from a tokens file (`admin.tokens_file` or `$SERVE_APP_TOKENS_FILE`,
a mounted Secret on Kubernetes) and, as before it existed, from two single tokens:
`SERVE_APP_ADMIN_TOKEN` (principal "admin", `admin:*`) and `SERVE_APP_SCORING_TOKEN`
(principal "scoring", `score:*`), each also readable from a `*_FILE`. The rules
(core/access.py) decide; this module reads the configuration and turns a refusal into
401 (no or unknown token) or 403 (a known principal without the scope, or nobody could).
With nobody holding `admin` the changing endpoints are closed, not open. Scoring stays
open until some principal holds a `score` scope. Tokens are never logged or echoed.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from serve_app.core.access import (
    ADMIN,
    READ,
    SCORE,
    Access,
    AccessConfigError,
    Principal,
    Scope,
    parse_principals,
    token_digest,
)
from serve_app.protocol.errors import Forbidden, Unauthorized
from serve_app.settings import AdminSettings

ADMIN_TOKEN_ENV = "SERVE_APP_ADMIN_TOKEN"
SCORING_TOKEN_ENV = "SERVE_APP_SCORING_TOKEN"
TOKENS_FILE_ENV = "SERVE_APP_TOKENS_FILE"
SINGLE_TOKENS = (  # (variable, principal, scope) kept from before the tokens file
    (ADMIN_TOKEN_ENV, "admin", Scope(ADMIN, "*")),
    (SCORING_TOKEN_ENV, "scoring", Scope(SCORE, "*")),
)

# The verb each endpoint needs (on the model in its path; `admin_models` on any model).
# Endpoints not listed (health, metadata, /version) are open.
HANDLER_VERBS = {
    "v2_infer": SCORE,
    "v2_explain": SCORE,
    "mlflow_invocations": SCORE,
    "v2_feedback": SCORE,
    "admin_models": READ,
    "admin_model": READ,
    "admin_history": READ,
    "admin_quality": READ,
    "admin_drift": READ,
    "admin_canary": ADMIN,
    "admin_promote": ADMIN,
    "admin_rollback": ADMIN,
    "admin_retrain": ADMIN,
}


def load_token(env: str) -> str | None:
    """The token in `$ENV`, else in the file named by `$ENV_FILE`, else None."""
    token = os.environ.get(env)
    if not token and os.environ.get(f"{env}_FILE"):
        token = Path(os.environ[f"{env}_FILE"]).read_text().strip()
    return token or None


def tokens_file(settings: AdminSettings) -> str | None:
    return settings.tokens_file or os.environ.get(TOKENS_FILE_ENV) or None


def load_access(settings: AdminSettings) -> Access:
    """Every configured principal; a bad tokens file raises AccessConfigError saying why."""
    principals: list[Principal] = []
    path = tokens_file(settings)
    if path is not None:
        try:
            document = yaml.safe_load(Path(path).read_text())  # JSON is YAML too
        except (OSError, yaml.YAMLError) as error:  # their text may quote a token: not shown
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise AccessConfigError(f"tokens file {path}: {type(error).__name__}{where}") from None
        try:
            principals.extend(parse_principals(document))
        except AccessConfigError as error:
            raise AccessConfigError(f"tokens file {path}: {error}") from None
    for env, name, scope in SINGLE_TOKENS:
        token = load_token(env)
        if token is not None:
            principals.append(Principal(name, token_digest(token), (scope,)))
    return Access(tuple(principals))


def authorize(
    access: Access, verb: str, model: str | None, authorization: str | None, reads_closed: bool
) -> Principal | None:
    """The principal allowed `verb` on `model`; None where no token is needed."""
    if verb == SCORE and not access.any_grants(SCORE):
        return None  # scoring is open unless some principal holds a score scope
    if verb == READ and not reads_closed:
        return None
    if not access.any_grants(verb):
        raise Forbidden(
            f"the admin API is disabled: no principal holds '{verb}' "
            f"(set {ADMIN_TOKEN_ENV} or a tokens file, {TOKENS_FILE_ENV})"
        )
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("this endpoint needs an 'Authorization: Bearer <token>' header")
    principal = access.identify(presented)
    if principal is None:
        raise Unauthorized("the bearer token is not valid")
    if not access.allows(principal, verb, model):
        target = "any model" if model is None else f"model '{model}'"
        raise Forbidden(f"principal '{principal.name}' has no '{verb}' scope on {target}")
    return principal
