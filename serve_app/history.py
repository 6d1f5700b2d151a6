"""The control actor's event history, in a database so that it outlives the actor.

The control actor restarts whenever the application is rebuilt, and Ray Serve rebuilds
it on every `serve deploy` whose `args` changed (Ray hashes them into the code version,
so even a settings-only change replaces every replica), as well as after a crash. The
history of gates, steps, promotions and rollbacks must survive all of these: it is what
an operator reads after an incident, with the principal behind each manual action (who
promoted what). SQLite in the home folder by default; any
SQLAlchemy URL (PostgreSQL on Kubernetes) when configured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

PRUNE_EVERY = 500  # appends between two retention sweeps
READ_LIMIT = 2_000

_metadata = sa.MetaData()
_events = sa.Table(
    "serve_app_events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("principal", sa.String(64), nullable=True),  # who, for manual actions
)


@dataclass(frozen=True)
class Event:
    at: float
    model: str
    kind: str
    detail: str
    version: int | None = None
    principal: str | None = None  # the name of the principal behind a manual action


class EventLog:
    def __init__(self, uri: str, retention_days: float) -> None:
        self._engine = sa.create_engine(uri)
        self._retention_s = retention_days * 86_400.0
        self._appended = 0
        _metadata.create_all(self._engine)
        _add_principal_column(self._engine)

    def append(self, event: Event) -> None:
        with self._engine.begin() as db:
            db.execute(sa.insert(_events).values(**event.__dict__))
            self._appended += 1
            if self._appended % PRUNE_EVERY == 1:
                cutoff = time.time() - self._retention_s
                db.execute(sa.delete(_events).where(_events.c.at < cutoff))

    def read(
        self, model: str | None = None, since: float | None = None, limit: int = READ_LIMIT
    ) -> list[Event]:
        """Oldest first: the newest `limit` events of `model` (or of all) since `since`."""
        query = sa.select(_events).order_by(_events.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(_events.c.model == model)
        if since is not None:
            query = query.where(_events.c.at >= since)
        with self._engine.connect() as db:
            rows = db.execute(query).all()
        return [
            Event(r.at, r.model, r.kind, r.detail, r.version, r.principal) for r in reversed(rows)
        ]

    def latest(self) -> dict[str, Event]:
        """Each model's newest event, in one query: the console's "last change" column
        after the control actor restarts (it then keeps them itself)."""
        newest = sa.select(sa.func.max(_events.c.id)).group_by(_events.c.model)
        query = sa.select(_events).where(_events.c.id.in_(newest))
        with self._engine.connect() as db:
            rows = db.execute(query).all()
        return {
            r.model: Event(r.at, r.model, r.kind, r.detail, r.version, r.principal) for r in rows
        }


def _add_principal_column(engine: sa.Engine) -> None:
    """A history written before principals existed gains the column (create_all adds none)."""
    columns = {c["name"] for c in sa.inspect(engine).get_columns(_events.name)}
    if "principal" not in columns:
        with engine.begin() as db:
            db.execute(sa.text(f"ALTER TABLE {_events.name} ADD COLUMN principal VARCHAR(64)"))
