"""The durable event history: it outlives its writer, filters by model and time, prunes by
age; and the `since` the HTTP API and CLI take."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serve_app.history import PRUNE_EVERY, Event, EventLog
from serve_app.protocol.errors import BadRequest
from serve_app.serving.http import parse_since

NOW = 1_764_580_000.0


def test_events_outlive_the_log_that_wrote_them_and_filter_by_model_and_time(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'history.db'}"
    writer = EventLog(uri, retention_days=400)
    for at, model, kind in [
        (NOW - 50, "a", "gate_passed"),
        (NOW - 20, "b", "promoted"),
        (NOW - 10, "a", "rolled_back"),
    ]:
        writer.append(Event(at, model, kind, "detail", 3))
    reader = EventLog(uri, retention_days=400)  # a restarted control actor
    assert [e.kind for e in reader.read("a")] == ["gate_passed", "rolled_back"]
    assert [e.kind for e in reader.read(None, since=NOW - 30)] == ["promoted", "rolled_back"]
    assert [e.kind for e in reader.read(limit=1)] == ["rolled_back"]  # the newest, oldest first
    assert reader.read("a")[0] == Event(NOW - 50, "a", "gate_passed", "detail", 3)


def test_events_older_than_the_retention_are_pruned(tmp_path: Path):
    log = EventLog(f"sqlite:///{tmp_path / 'history.db'}", retention_days=1)
    now = time.time()  # retention counts back from the real clock
    log.append(Event(now - 3 * 86_400, "a", "old", ""))
    for n in range(PRUNE_EVERY):
        log.append(Event(now + n, "a", "new", ""))
    kinds = {e.kind for e in log.read("a", limit=10 * PRUNE_EVERY)}
    assert "old" not in kinds and kinds == {"new"}


@pytest.mark.parametrize(
    ("raw", "since"),
    [
        (None, None),
        ("", None),
        ("1764000000", 1_764_000_000.0),
        ("90s", NOW - 90),
        ("30m", NOW - 1_800),
        ("2h", NOW - 7_200),
        ("7d", NOW - 604_800),
        ("1.5h", NOW - 5_400),
    ],
)
def test_since_is_a_unix_time_or_an_age(raw, since):
    assert parse_since(raw, NOW) == since


@pytest.mark.parametrize("raw", ["yesterday", "2w", "-5m", "nan", "inf", "h"])
def test_a_since_that_is_neither_is_refused(raw):
    with pytest.raises(BadRequest, match="'since'"):
        parse_since(raw, NOW)


def test_manual_actions_keep_their_principal_and_an_older_table_gains_the_column(
    tmp_path: Path,
):
    import sqlalchemy as sa

    uri = f"sqlite:///{tmp_path / 'history.db'}"
    engine = sa.create_engine(uri)
    with engine.begin() as db:  # the table as it was before principals existed
        db.execute(
            sa.text(
                "CREATE TABLE serve_app_events (id INTEGER PRIMARY KEY, at FLOAT NOT NULL, "
                "model VARCHAR(256) NOT NULL, kind VARCHAR(64) NOT NULL, detail TEXT NOT NULL, "
                "version INTEGER)"
            )
        )
        db.execute(
            sa.text("INSERT INTO serve_app_events VALUES (1, :at, 'a', 'promoted', '', 2)"),
            {"at": NOW - 5},
        )
    log = EventLog(uri, retention_days=400)
    log.append(Event(NOW, "a", "manual_promote", "", 3, principal="card-team"))
    assert [(e.kind, e.principal) for e in log.read("a")] == [
        ("promoted", None),
        ("manual_promote", "card-team"),
    ]
    EventLog(uri, retention_days=400)  # a second start finds the column there
