"""The label store: logged predictions' join keys, the labels sent back, and their join.

Fraud labels come days to months after the prediction, so the log's join keys (model,
request id, row, version, score, decision) are kept here for `retention_days` (180 by
default: card disputes can take 120). The feature values stay in the prediction log's
sink; this store holds only what quality needs. An embedded SQLite file in the home
folder by default (WAL, so router replicas and the control actor share it), PostgreSQL
(any SQLAlchemy URL) when configured.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa

from serve_app.core.quality import CohortCounts, LabelledRows
from serve_app.labels.feedback import (
    ACCEPTED,
    CONFLICT,
    DUPLICATE,
    ROW_REQUIRED,
    UNKNOWN_ID,
    UNKNOWN_ROW,
    Label,
    Outcome,
    read_item,
)
from serve_app.predictions.records import SECONDS_PER_DAY, LoggedBatch
from serve_app.predictions.sinks import Tally

LOOKUP_CHUNK = 500  # request ids per IN (...) query


class StoreUnavailable(Exception):
    """The label database cannot be reached or written (stopped, locked, disk full):
    nothing was stored, and the caller may send the same labels again later."""


@contextmanager
def _reachable() -> Iterator[None]:
    """The driver's connection and operational errors as `StoreUnavailable`, naming the
    kind of error only: the driver's text can carry the database's address."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        kind = type(getattr(error, "orig", None) or error).__name__
        raise StoreUnavailable(f"the label store is unavailable ({kind})") from error


_metadata = sa.MetaData()
predictions = sa.Table(
    "serve_app_predictions",
    _metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("decision", sa.Boolean, nullable=False),
    sa.Index("serve_app_predictions_by_version_day", "model", "version", "day"),
    sa.Index("serve_app_predictions_by_time", "time"),
)
labels = sa.Table(
    "serve_app_labels",
    _metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("label_time", sa.Float, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False, index=True),
)


_SQLITE_INSERT_PREDICTIONS = (
    f"INSERT OR IGNORE INTO {predictions.name} "
    f"({', '.join(c.name for c in predictions.columns)}) "
    f"VALUES ({', '.join('?' for _ in predictions.columns)})"
)


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writers
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")  # several processes write: wait, don't fail
    cursor.close()


class LabelStore:
    def __init__(self, uri: str, retention_days: float) -> None:
        self._engine = sa.create_engine(uri, pool_pre_ping=True)
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self.retention_s = retention_days * SECONDS_PER_DAY
        _metadata.create_all(self._engine)

    def _insert_ignoring_duplicates(self, table: sa.Table):
        """INSERT that keeps the first row of a key (a retried request, a re-sent label)."""
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing()

    # -- predictions (the prediction log's writer) ----------------------------------------
    def add_predictions(self, batches: Sequence[LoggedBatch]) -> None:
        """The join keys of every row. Tuples straight to the driver on SQLite: SQLAlchemy's
        per-row work was most of the writer thread's time there (about 9 of 11 µs a row)."""
        rows = [
            (
                batch.model,
                batch.request_id,
                index,
                batch.version,
                batch.role,
                batch.day,
                batch.time,
                score,
                score >= batch.threshold,
            )
            for batch in batches
            for index, score in enumerate(batch.scores.tolist())
        ]
        if not rows:
            return
        with self._engine.begin() as db:
            if self._engine.dialect.name == "sqlite":
                db.exec_driver_sql(_SQLITE_INSERT_PREDICTIONS, rows)
            else:
                columns = [c.name for c in predictions.columns]
                records = [dict(zip(columns, row, strict=True)) for row in rows]
                db.execute(self._insert_ignoring_duplicates(predictions), records)

    # -- labels ---------------------------------------------------------------------------
    def record_raw(self, model: str, items: Sequence[Any], now: float) -> list[Outcome]:
        """Label rows as clients send them (JSON objects, CSV rows): each validated, the
        valid ones stored; an outcome per item, in order. The endpoint, the CSV import and
        the Kafka topic all come in here."""
        parsed = [read_item(index, item, now) for index, item in enumerate(items)]
        valid = [(index, p) for index, p in enumerate(parsed) if isinstance(p, Label)]
        with _reachable():
            statuses = self.record_labels(model, [label for _, label in valid]) if valid else []
        outcomes = [p for p in parsed if isinstance(p, Outcome)]
        outcomes += [
            Outcome(index, status, label.request_id)
            for (index, label), status in zip(valid, statuses, strict=True)
        ]
        return sorted(outcomes, key=lambda outcome: outcome.index)

    def record_labels(self, model: str, items: Sequence[Label]) -> list[str]:
        """Store what can be joined; the outcome of each item, in order."""
        ids = sorted({item.request_id for item in items})
        logged: dict[str, set[int]] = defaultdict(set)
        known: dict[tuple[str, int], int] = {}
        with self._engine.connect() as db:
            for chunk in _chunks(ids, LOOKUP_CHUNK):
                found = db.execute(
                    sa.select(predictions.c.request_id, predictions.c.row)
                    .where(predictions.c.model == model, predictions.c.request_id.in_(chunk))
                    .distinct()
                )
                for request_id, row in found:
                    logged[request_id].add(row)
                for request_id, row, label in db.execute(
                    sa.select(labels.c.request_id, labels.c.row, labels.c.label).where(
                        labels.c.model == model, labels.c.request_id.in_(chunk)
                    )
                ):
                    known[(request_id, row)] = label
        outcomes, new = [], []
        now = time.time()
        for item in items:
            rows = logged.get(item.request_id)
            if not rows:
                outcomes.append(UNKNOWN_ID)
                continue
            row = item.row
            if row is None:
                if len(rows) > 1:
                    outcomes.append(ROW_REQUIRED)
                    continue
                row = next(iter(rows))
            if row not in rows:
                outcomes.append(UNKNOWN_ROW)
                continue
            before = known.get((item.request_id, row))
            if before is not None:
                outcomes.append(DUPLICATE if before == item.label else CONFLICT)
                continue
            known[(item.request_id, row)] = item.label
            new.append(
                {
                    "model": model,
                    "request_id": item.request_id,
                    "row": row,
                    "label": item.label,
                    "label_time": item.label_time,
                    "received_at": now,
                }
            )
            outcomes.append(ACCEPTED)
        if new:
            with self._engine.begin() as db:
                db.execute(self._insert_ignoring_duplicates(labels), new)
        return outcomes

    # -- the join ------------------------------------------------------------------------
    def quality_inputs(
        self, model: str, since: float
    ) -> dict[int, tuple[list[CohortCounts], LabelledRows]]:
        """Per version logged since `since`: its rows per cohort, and its labelled rows."""
        p, lab = predictions, labels
        first_day = int(since // SECONDS_PER_DAY)
        counts: dict[int, list[CohortCounts]] = defaultdict(list)
        joined: dict[int, list[tuple]] = defaultdict(list)
        alerts = sa.func.sum(sa.case((p.c.decision, 1), else_=0))
        with _reachable(), self._engine.connect() as db:
            for version, day, rows, flagged in db.execute(
                sa.select(p.c.version, p.c.day, sa.func.count(), alerts)
                .where(p.c.model == model, p.c.day >= first_day, p.c.time >= since)
                .group_by(p.c.version, p.c.day)
            ):
                counts[version].append(CohortCounts(day, rows, int(flagged or 0)))
            for version, day, score, decision, label in db.execute(
                sa.select(p.c.version, p.c.day, p.c.score, p.c.decision, lab.c.label)
                .join(
                    lab,
                    sa.and_(
                        lab.c.model == p.c.model,
                        lab.c.request_id == p.c.request_id,
                        lab.c.row == p.c.row,
                    ),
                )
                .where(p.c.model == model, p.c.day >= first_day, p.c.time >= since)
            ):
                joined[version].append((day, score, decision, label))
        return {
            version: (rows, _labelled(joined.get(version, []))) for version, rows in counts.items()
        }

    def labels_of(self, model: str) -> list[tuple[str, int, int]]:
        """Every stored label of `model`: (request id, row, label), for a training set."""
        query = sa.select(labels.c.request_id, labels.c.row, labels.c.label).where(
            labels.c.model == model
        )
        with self._engine.connect() as db:
            return [tuple(found) for found in db.execute(query)]

    def prune(self, now: float | None = None) -> int:
        """Forget predictions (and labels) older than the retention; returns rows removed."""
        cutoff = (now or time.time()) - self.retention_s
        with _reachable(), self._engine.begin() as db:
            removed = db.execute(sa.delete(predictions).where(predictions.c.time < cutoff))
            db.execute(sa.delete(labels).where(labels.c.received_at < cutoff))
        return removed.rowcount or 0


def _labelled(rows: list[tuple]) -> LabelledRows:
    if not rows:
        return LabelledRows.empty()
    day, score, decision, label = zip(*rows, strict=True)
    return LabelledRows(
        np.asarray(day, dtype=np.int64),
        np.asarray(score, dtype=np.float64),
        np.asarray(decision, dtype=bool),
        np.asarray(label, dtype=np.int64),
    )


def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class StoreSink:
    """The prediction log's second sink: the join keys of every logged row, into the store."""

    name = "store"

    def __init__(self, store: LabelStore, tally: Tally) -> None:
        self._store = store
        self._tally = tally

    def write(self, batches: Sequence[LoggedBatch]) -> None:
        self._store.add_predictions(batches)
        per_model: dict[str, int] = defaultdict(int)
        for batch in batches:
            per_model[batch.model] += batch.size
        for model, rows in per_model.items():
            self._tally.written(model, self.name, rows)

    def tick(self, now: float) -> None:
        pass

    def close(self, timeout_s: float) -> None:
        pass
