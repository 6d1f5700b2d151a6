import pytest

from serve_app.protocol.errors import Forbidden, Unauthorized
from serve_app.serving import auth


def test_admin_is_disabled_without_a_token():
    with pytest.raises(Forbidden, match="disabled"):
        auth.require_admin("Bearer anything", None)


def test_admin_token_checks():
    auth.require_admin("Bearer s3cret", "s3cret")
    for header in (None, "s3cret", "Basic s3cret", "Bearer wrong", "Bearer "):
        with pytest.raises(Unauthorized):
            auth.require_admin(header, "s3cret")


def test_scoring_is_open_unless_configured():
    auth.require_scoring(None, None)
    with pytest.raises(Unauthorized):
        auth.require_scoring(None, "tok")


def test_token_from_env_or_file(monkeypatch, tmp_path):
    monkeypatch.delenv(auth.ADMIN_TOKEN_ENV, raising=False)
    assert auth.load_token(auth.ADMIN_TOKEN_ENV) is None
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.setenv(f"{auth.ADMIN_TOKEN_ENV}_FILE", str(secret))
    assert auth.load_token(auth.ADMIN_TOKEN_ENV) == "from-file"
    monkeypatch.setenv(auth.ADMIN_TOKEN_ENV, "from-env")
    assert auth.load_token(auth.ADMIN_TOKEN_ENV) == "from-env"


def test_admin_reads_are_open_unless_the_settings_close_them():
    auth.require_reader(None, None, needed=False)
    auth.require_reader(None, "s3cret", needed=False)
    auth.require_reader("Bearer s3cret", "s3cret", needed=True)
    with pytest.raises(Unauthorized):
        auth.require_reader(None, "s3cret", needed=True)
    with pytest.raises(Forbidden, match="disabled"):  # closed, and no token: closed for all
        auth.require_reader("Bearer anything", None, needed=True)
