"""Named principals and scopes: parsing the tokens file, matching (verb, model), and the
401/403 answers the router gives; plus the single tokens kept from before the file."""

from __future__ import annotations

import hashlib
import json

import pytest

from serve_app.core import access as core
from serve_app.core.access import ADMIN, READ, SCORE, Access, AccessConfigError, Scope
from serve_app.protocol.errors import Forbidden, Unauthorized
from serve_app.serving import auth
from serve_app.settings import AdminSettings

CARD_TOKEN = "card-team-token-0123456789"
ACH_TOKEN = "ach-team-token-0123456789"
OPS_TOKEN = "ops-reader-token-0123456789"
TOKENS = {
    "principals": [
        {
            "name": "card-team",
            "token_sha256": hashlib.sha256(CARD_TOKEN.encode()).hexdigest(),
            "scopes": ["score:fraud-card-*", "admin:fraud-card-*"],
        },
        {"name": "ach-scorer", "token": ACH_TOKEN, "scopes": ["score:fraud-ach-*"]},
        {"name": "ops", "token": OPS_TOKEN, "scopes": ["read:*"]},
    ]
}


@pytest.fixture(autouse=True)
def no_env_tokens(monkeypatch):
    """The test session's conftest sets an admin token for the Ray tests: not here."""
    for name in (auth.ADMIN_TOKEN_ENV, auth.SCORING_TOKEN_ENV, auth.TOKENS_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


@pytest.fixture
def team_access() -> Access:
    return Access(core.parse_principals(TOKENS))


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- scopes and matching (the pure core) ---


def test_scopes_parse_and_glob_on_the_model_name():
    scope = Scope.parse("score:fraud-card-*")
    assert (scope.verb, scope.pattern, str(scope)) == (SCORE, "fraud-card-*", "score:fraud-card-*")
    assert scope.grants(SCORE, "fraud-card-eu")
    assert not scope.grants(SCORE, "fraud-ach-us")
    assert not scope.grants(SCORE, "xfraud-card-eu")  # the whole name, not a substring
    assert Scope.parse("admin:*").grants(ADMIN, "anything")
    assert Scope.parse("read:fraud-?-eu").grants(READ, "fraud-x-eu")


@pytest.mark.parametrize("text", ["score", "write:*", "Score:*", "admin:", "read:a/b", 7, None])
def test_bad_scopes_are_refused(text):
    with pytest.raises(AccessConfigError):
        Scope.parse(text)


def test_admin_implies_read_and_nothing_implies_score():
    admin, read, score = Scope(ADMIN, "*"), Scope(READ, "*"), Scope(SCORE, "*")
    assert admin.grants(ADMIN, "m") and admin.grants(READ, "m") and not admin.grants(SCORE, "m")
    assert read.grants(READ, "m") and not read.grants(ADMIN, "m") and not read.grants(SCORE, "m")
    assert score.grants(SCORE, "m") and not score.grants(READ, "m")
    assert not score.grants(ADMIN, "m")


def test_any_model_means_the_verb_on_some_model():
    assert Scope(ADMIN, "fraud-card-*").grants(READ, None)
    assert not Scope(SCORE, "*").grants(READ, None)


def test_a_token_identifies_its_principal_only(team_access):
    assert team_access.identify(CARD_TOKEN).name == "card-team"  # from its sha256
    assert team_access.identify(ACH_TOKEN).name == "ach-scorer"  # from a plain token
    assert team_access.identify("card-team") is None  # a name is not a token
    assert team_access.identify(CARD_TOKEN + "x") is None
    assert team_access.identify("") is None


def test_identify_compares_every_digest_without_an_early_exit(team_access, monkeypatch):
    compared = []
    real = core.hmac.compare_digest

    def counting(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(core.hmac, "compare_digest", counting)
    team_access.identify(CARD_TOKEN)  # the first principal: all three are still compared
    assert len(compared) == len(TOKENS["principals"])


def test_decisions_are_cached_and_bounded(team_access, monkeypatch):
    card = team_access.identify(CARD_TOKEN)
    monkeypatch.setattr(core, "DECISIONS_CACHED", 3)
    for n in range(10):
        assert team_access.allows(card, SCORE, f"fraud-card-{n}")
        assert not team_access.allows(card, SCORE, f"fraud-ach-{n}")
        assert len(team_access._decisions) <= 3
    assert team_access.allows(card, ADMIN, "fraud-card-eu")
    assert not team_access.allows(card, ADMIN, "fraud-ach-us")


def test_tokens_never_appear_in_reprs(team_access):
    card = team_access.identify(CARD_TOKEN)
    for text in (repr(card), repr(team_access), str(card)):
        assert CARD_TOKEN not in text and card.digest.hex() not in text
        assert repr(card.digest) not in text
    assert "card-team" in repr(team_access)


# --- the tokens file ---


def principal(**entry):
    return {"principals": [{"name": "p", "token": "t" * 16, "scopes": ["score:*"], **entry}]}


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (None, "one key, 'principals'"),
        ([], "one key, 'principals'"),
        ({"principals": [], "extra": 1}, "one key, 'principals'"),
        ({"principals": {"a": 1}}, "must be a list"),
        ({"principals": ["card"]}, "principal #1 must be a mapping"),
        (principal(name=""), "'name' must be"),
        (principal(name="has space"), "'name' must be"),
        (principal(name=7), "'name' must be"),
        (principal(scope=["score:*"]), "unknown keys ['scope']"),
        (principal(token_sha256="ab" * 32), "exactly one of"),
        ({"principals": [{"name": "p", "scopes": ["score:*"]}]}, "exactly one of"),
        (principal(token="short"), "at least 16"),
        (principal(token=None, scopes=["score:*"]), "at least 16"),
        ({"principals": [{"name": "p", "token_sha256": "xyz", "scopes": ["read:*"]}]}, "64 hex"),
        (principal(scopes=[]), "non-empty list"),
        (principal(scopes="score:*"), "non-empty list"),
        (principal(scopes=["score:*", "delete:*"]), "principal 'p': scope 'delete:*': unknown"),
    ],
)
def test_bad_tokens_documents_say_what_is_wrong(document, says):
    with pytest.raises(AccessConfigError) as refused:
        core.parse_principals(document)
    assert says in str(refused.value)
    assert "t" * 16 not in str(refused.value)  # the token is never in the message


def test_names_and_tokens_must_be_distinct():
    twice = {"principals": TOKENS["principals"] + [{**TOKENS["principals"][1], "token": "z" * 16}]}
    with pytest.raises(AccessConfigError, match="distinct: \\['ach-scorer'\\]"):
        Access(core.parse_principals(twice))
    shared = {"principals": [*TOKENS["principals"], {**TOKENS["principals"][1], "name": "other"}]}
    with pytest.raises(AccessConfigError, match="share a token") as refused:
        Access(core.parse_principals(shared))
    assert ACH_TOKEN not in str(refused.value)


def test_the_tokens_file_is_yaml_or_json_from_the_setting_or_the_environment(tmp_path, monkeypatch):
    as_json = tmp_path / "tokens.json"
    as_json.write_text(json.dumps(TOKENS))
    names = [p.name for p in auth.load_access(AdminSettings(tokens_file=str(as_json))).principals]
    assert names == ["card-team", "ach-scorer", "ops"]
    as_yaml = tmp_path / "tokens.yaml"
    as_yaml.write_text(
        "principals:\n"
        "  - name: card-team\n"
        f"    token_sha256: {hashlib.sha256(CARD_TOKEN.encode()).hexdigest()}\n"
        "    scopes:\n"
        "      - score:fraud-card-*\n"  # unquoted: a colon without a space is plain text
        '      - "admin:fraud-card-*"\n'
    )
    monkeypatch.setenv(auth.TOKENS_FILE_ENV, str(as_yaml))
    loaded = auth.load_access(AdminSettings())
    assert [str(s) for s in loaded.identify(CARD_TOKEN).scopes] == [
        "score:fraud-card-*",
        "admin:fraud-card-*",
    ]
    assert [p.name for p in auth.load_access(AdminSettings(tokens_file=str(as_json))).principals][
        -1
    ] == "ops"  # the setting wins over the environment


def test_a_bad_tokens_file_fails_with_its_path_and_no_content(tmp_path):
    broken = tmp_path / "tokens.yaml"
    broken.write_text(f"principals:\n  - name: a\n    token: {CARD_TOKEN}\n   scopes: [\n")
    with pytest.raises(AccessConfigError) as refused:
        auth.load_access(AdminSettings(tokens_file=str(broken)))
    assert str(broken) in str(refused.value) and "line" in str(refused.value)
    assert CARD_TOKEN not in str(refused.value)
    with pytest.raises(AccessConfigError, match="FileNotFoundError"):
        auth.load_access(AdminSettings(tokens_file=str(tmp_path / "missing.yaml")))
    broken.write_text(json.dumps(principal(scopes=["score:*", "grant:*"])))
    with pytest.raises(AccessConfigError, match=f"tokens file {broken}: .*unknown verb 'grant'"):
        auth.load_access(AdminSettings(tokens_file=str(broken)))


def test_the_single_tokens_stay_principals_admin_and_scoring(monkeypatch, tmp_path):
    monkeypatch.setenv(auth.ADMIN_TOKEN_ENV, "the-admin-token")
    secret = tmp_path / "scoring"
    secret.write_text("the-scoring-token\n")
    monkeypatch.setenv(f"{auth.SCORING_TOKEN_ENV}_FILE", str(secret))
    access = auth.load_access(AdminSettings())
    assert access.identify("the-admin-token").name == "admin"
    assert access.identify("the-scoring-token").name == "scoring"
    check = auth.authorize
    assert check(access, ADMIN, "any-model", bearer("the-admin-token"), False).name == "admin"
    assert check(access, SCORE, "any-model", bearer("the-scoring-token"), False).name == "scoring"
    with pytest.raises(Forbidden, match="principal 'admin' has no 'score' scope"):
        check(access, SCORE, "any-model", bearer("the-admin-token"), False)
    with pytest.raises(Forbidden, match="principal 'scoring' has no 'admin' scope"):
        check(access, ADMIN, "any-model", bearer("the-scoring-token"), False)
    file = tmp_path / "tokens.json"  # and beside a tokens file, under their own names
    file.write_text(json.dumps(TOKENS))
    names = [p.name for p in auth.load_access(AdminSettings(tokens_file=str(file))).principals]
    assert names == ["card-team", "ach-scorer", "ops", "admin", "scoring"]


def test_token_from_env_or_file(monkeypatch, tmp_path):
    assert auth.load_token(auth.ADMIN_TOKEN_ENV) is None
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.setenv(f"{auth.ADMIN_TOKEN_ENV}_FILE", str(secret))
    assert auth.load_token(auth.ADMIN_TOKEN_ENV) == "from-file"
    monkeypatch.setenv(auth.ADMIN_TOKEN_ENV, "from-env")
    assert auth.load_token(auth.ADMIN_TOKEN_ENV) == "from-env"


# --- the router's answers ---


def test_without_principals_changes_are_closed_and_scoring_and_reads_open():
    nobody = auth.load_access(AdminSettings())
    with pytest.raises(Forbidden, match="disabled"):
        auth.authorize(nobody, ADMIN, "m", bearer("anything"), False)
    with pytest.raises(Forbidden, match="disabled"):  # reads closed, and nobody may read
        auth.authorize(nobody, READ, "m", None, True)
    assert auth.authorize(nobody, READ, "m", None, False) is None
    assert auth.authorize(nobody, SCORE, "m", None, False) is None


def test_scoring_is_open_until_some_principal_holds_a_score_scope():
    admins_only = Access(
        (core.Principal("admin", core.token_digest("a" * 16), (Scope(ADMIN, "*"),)),)
    )
    assert auth.authorize(admins_only, SCORE, "m", None, False) is None
    with pytest.raises(Unauthorized):
        auth.authorize(Access(core.parse_principals(TOKENS)), SCORE, "fraud-card-eu", None, False)


@pytest.mark.parametrize(
    "header", [None, "", CARD_TOKEN, f"Basic {CARD_TOKEN}", "Bearer ", "Bearer"]
)
def test_no_bearer_token_is_401(team_access, header):
    with pytest.raises(Unauthorized, match="Authorization: Bearer"):
        auth.authorize(team_access, ADMIN, "fraud-card-eu", header, False)


def test_a_wrong_token_is_401_and_not_echoed(team_access):
    with pytest.raises(Unauthorized) as refused:
        auth.authorize(team_access, SCORE, "fraud-card-eu", bearer("wrong-token-here"), False)
    assert "wrong-token-here" not in str(refused.value)
    assert auth.authorize(team_access, SCORE, "fraud-card-eu", f"bearer {CARD_TOKEN}", False)


def test_a_team_acts_on_its_models_only(team_access):
    card = bearer(CARD_TOKEN)
    assert auth.authorize(team_access, SCORE, "fraud-card-eu", card, False).name == "card-team"
    assert auth.authorize(team_access, ADMIN, "fraud-card-eu", card, True).name == "card-team"
    assert auth.authorize(team_access, READ, "fraud-card-eu", card, True).name == "card-team"
    for verb in (SCORE, ADMIN, READ):
        with pytest.raises(
            Forbidden, match=f"'card-team' has no '{verb}' scope on model 'fraud-ach-us'"
        ):
            auth.authorize(team_access, verb, "fraud-ach-us", card, True)
    scorer = bearer(ACH_TOKEN)  # score grants neither admin nor reads
    assert auth.authorize(team_access, SCORE, "fraud-ach-us", scorer, False).name == "ach-scorer"
    for verb in (ADMIN, READ):
        with pytest.raises(Forbidden):
            auth.authorize(team_access, verb, "fraud-ach-us", scorer, True)


def test_fleet_reads_need_a_read_or_admin_scope_on_some_model(team_access):
    for token, name in ((CARD_TOKEN, "card-team"), (OPS_TOKEN, "ops")):
        assert auth.authorize(team_access, READ, None, bearer(token), True).name == name
    with pytest.raises(Forbidden, match="'ach-scorer' has no 'read' scope on any model"):
        auth.authorize(team_access, READ, None, bearer(ACH_TOKEN), True)
    with pytest.raises(Forbidden, match="'ops' has no 'admin' scope"):
        auth.authorize(team_access, ADMIN, "fraud-card-eu", bearer(OPS_TOKEN), True)


def test_every_endpoint_that_reads_or_changes_a_model_has_a_verb():
    from serve_app.serving.http import ROUTES

    handlers = {handler for _, handler, _ in ROUTES}
    assert set(auth.HANDLER_VERBS) <= handlers
    open_ones = handlers - set(auth.HANDLER_VERBS)
    assert open_ones == {
        "mlflow_root_invocations",  # the router turns it into mlflow_invocations first
        "mlflow_ping",
        "mlflow_version",
        "v2_model_ready",
        "v2_model_metadata",
        "live",
        "ready",
        "v2_server_metadata",
        "openapi",  # the API's own description
        "console",  # the page and its files; its data calls carry the token
    }
    changing = {h for method, h, _ in ROUTES if method == "POST" and h.startswith("admin_")}
    assert changing and all(auth.HANDLER_VERBS[h] == ADMIN for h in changing)
