"""Who may do what to which model: named principals with scopes such as `score:fraud-card-*`.

Several teams share one cluster, so a token is a principal (a name the audit history
records) holding scopes `VERB:GLOB`, the glob matched against the model name. Verbs:
`score` (scoring and labels), `read` (the admin API's reads) and `admin` (canary,
promote, rollback, retrain; it implies `read`). `score` implies nothing else.

Pure: no HTTP, no files. Tokens are kept as SHA-256 digests only, and a presented token
is compared with every principal's digest in constant time, with no early exit, so the
time taken tells nothing about which principal (if any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

SCORE, READ, ADMIN = "score", "read", "admin"
VERBS = (SCORE, READ, ADMIN)
IMPLIED = {SCORE: {SCORE}, READ: {READ}, ADMIN: {ADMIN, READ}}  # what each verb grants
MIN_PLAIN_TOKEN = 16  # characters: a plain token in a tokens file is for development
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # printed in the history and logs
DIGEST = re.compile(r"[0-9a-f]{64}\Z")
DECISIONS_CACHED = 4_096  # (principal, verb, model) answers kept for the scoring path


class AccessConfigError(ValueError):
    """The principals are not usable: says which entry and why, never a token."""


@dataclass(frozen=True)
class Scope:
    verb: str
    pattern: str  # a glob on the model name: `fraud-card-*`, `*`

    @classmethod
    def parse(cls, text: Any) -> Scope:
        if not isinstance(text, str) or ":" not in text:
            raise AccessConfigError(f"scope {text!r} is not VERB:MODEL-GLOB (e.g. 'score:*')")
        verb, _, pattern = text.partition(":")
        if verb not in VERBS:
            raise AccessConfigError(f"scope {text!r}: unknown verb {verb!r} (one of {VERBS})")
        if not pattern or "/" in pattern:
            raise AccessConfigError(f"scope {text!r} needs a model-name glob after ':'")
        return cls(verb, pattern)

    def grants(self, verb: str, model: str | None) -> bool:
        """`model` None: any model (a fleet-wide read needs the verb on some model)."""
        if verb not in IMPLIED[self.verb]:
            return False
        return model is None or fnmatchcase(model, self.pattern)

    def __str__(self) -> str:
        return f"{self.verb}:{self.pattern}"


@dataclass(frozen=True)
class Principal:
    name: str
    digest: bytes = field(repr=False)  # SHA-256 of the token; never printed
    scopes: tuple[Scope, ...]

    def grants(self, verb: str, model: str | None) -> bool:
        return any(scope.grants(verb, model) for scope in self.scopes)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Access:
    """The configured principals: identify a token, decide (verb, model) for a principal."""

    def __init__(self, principals: tuple[Principal, ...] = ()) -> None:
        names = [p.name for p in principals]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise AccessConfigError(f"principal names must be distinct: {duplicated} repeat")
        digests = [p.digest for p in principals]
        if len(set(digests)) != len(digests):
            shared = [p.name for p in principals if digests.count(p.digest) > 1]
            raise AccessConfigError(f"principals {shared} share a token: each needs its own")
        self.principals = principals
        self._granted = frozenset(v for v in VERBS if any(p.grants(v, None) for p in principals))
        self._decisions: dict[tuple[str, str, str | None], bool] = {}

    def __repr__(self) -> str:
        return f"Access(principals={[p.name for p in self.principals]})"

    def any_grants(self, verb: str) -> bool:
        """Does some principal hold `verb` on some model? (If not, the verb is closed.)"""
        return verb in self._granted

    def identify(self, token: str) -> Principal | None:
        """The principal holding `token`: every digest compared, in constant time each."""
        presented = token_digest(token)
        found = None
        for principal in self.principals:
            if hmac.compare_digest(presented, principal.digest) and found is None:
                found = principal
        return found

    def allows(self, principal: Principal, verb: str, model: str | None) -> bool:
        key = (principal.name, verb, model)
        decided = self._decisions.get(key)
        if decided is None:
            if len(self._decisions) >= DECISIONS_CACHED:
                self._decisions.clear()
            decided = self._decisions[key] = principal.grants(verb, model)
        return decided


def parse_principals(document: Any) -> tuple[Principal, ...]:
    """A tokens file's content: `{"principals": [{name, token_sha256 | token, scopes}]}`."""
    if not isinstance(document, dict) or set(document) != {"principals"}:
        raise AccessConfigError("a tokens file holds one key, 'principals': a list")
    entries = document["principals"]
    if not isinstance(entries, list):
        raise AccessConfigError("'principals' must be a list")
    return tuple(_principal(n, entry) for n, entry in enumerate(entries))


def _principal(index: int, entry: Any) -> Principal:
    where = f"principal #{index + 1}"
    if not isinstance(entry, dict):
        raise AccessConfigError(f"{where} must be a mapping with name, token_sha256, scopes")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise AccessConfigError(f"{where}: 'name' must be 1-64 letters, digits, '.', '_', '-'")
    where = f"principal {name!r}"
    if unknown := sorted(set(entry) - {"name", "token", "token_sha256", "scopes"}):
        raise AccessConfigError(f"{where}: unknown keys {unknown}")
    if ("token" in entry) == ("token_sha256" in entry):
        raise AccessConfigError(f"{where} needs exactly one of token_sha256 (preferred), token")
    if "token" in entry:
        token = entry["token"]
        if not isinstance(token, str) or len(token) < MIN_PLAIN_TOKEN:
            raise AccessConfigError(f"{where}: 'token' must be at least {MIN_PLAIN_TOKEN} chars")
        digest = token_digest(token)
    else:
        hexdigest = entry["token_sha256"]
        if not isinstance(hexdigest, str) or not DIGEST.match(hexdigest.lower()):
            raise AccessConfigError(f"{where}: 'token_sha256' must be 64 hex digits")
        digest = bytes.fromhex(hexdigest)
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not scopes:
        raise AccessConfigError(f"{where}: 'scopes' must be a non-empty list")
    try:
        parsed = tuple(Scope.parse(scope) for scope in scopes)
    except AccessConfigError as error:
        raise AccessConfigError(f"{where}: {error}") from None
    return Principal(name, digest, parsed)
