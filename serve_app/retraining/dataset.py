"""The training set of a retrain: logged features joined with their labels.

The prediction log (its Parquet files, or its Kafka topic: kafka_rows.py) holds what each
request was scored on; the label store holds what became of it. A row is taken once (a
shadow's record repeats the champion's features), only when labelled, and only once
`label_maturity_s` old: a younger fraud may not have been disputed yet, and a model trained
on it learns that fresh fraud is rare.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serve_app.labels.store import LabelStore

KEY = ["request_id", "row"]


@dataclass(frozen=True)
class TrainingSet:
    features: tuple[str, ...]
    rows: np.ndarray  # float32 [n, features], oldest first
    labels: np.ndarray  # 0/1 [n]
    times: np.ndarray  # Unix seconds [n]

    def __len__(self) -> int:
        return int(self.labels.size)

    def split(
        self, holdout_fraction: float, onset: float | None = None
    ) -> tuple[TrainingSet, TrainingSet]:
        """(train, holdout): the holdout is the newest `holdout_fraction` of the rows by
        time, never a random sample: a model must be judged on traffic it has not seen,
        and fraud patterns move with time.

        With a drift `onset`, the holdout is the newest fraction of the rows since then:
        the traffic the new version will serve. A holdout reaching back before the onset
        calibrates the threshold on a mix: the new version then flags another share of
        live traffic than the champion does, and its live recall is not comparable."""
        first = 0 if onset is None else int(np.searchsorted(self.times, onset, side="left"))
        cut = len(self) - max(1, round((len(self) - first) * holdout_fraction))
        return self._take(slice(0, cut)), self._take(slice(cut, None))

    def since(self, at: float) -> TrainingSet:
        return self._take(slice(int(np.searchsorted(self.times, at, side="left")), None))

    def _take(self, part: slice) -> TrainingSet:
        return TrainingSet(self.features, self.rows[part], self.labels[part], self.times[part])

    @property
    def window(self) -> tuple[float, float] | None:
        return (float(self.times[0]), float(self.times[-1])) if len(self) else None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(self.features))


def log_files(directory: Path, model: str, since: float, until: float) -> list[Path]:
    """The model's finished Parquet files whose date partition meets [since, until]."""
    root = directory / f"model={quote(model, safe='')}"
    first, last = (_date(since), _date(until))
    found = []
    for folder in sorted(root.glob("date=*")):
        if first <= folder.name.removeprefix("date=") <= last:
            found += sorted(folder.glob("*.parquet"))
    return found


def _date(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def logged_rows(files: list[Path], features: tuple[str, ...], since: float, until: float):
    """The logged rows of `features` in [since, until], one per (request id, row)."""
    frames = []
    for path in files:
        table = pq.read_table(path, columns=["request_id", "row", "time", "features"])
        struct = table.column("features").combine_chunks()
        names = {struct.type.field(i).name for i in range(struct.type.num_fields)}
        if not set(features) <= names:
            continue  # a version with another signature
        columns = {name: struct.field(name) for name in features}
        part = pa.table({k: table.column(k) for k in ("request_id", "row", "time")} | columns)
        frames.append(part.to_pandas())
    if not frames:
        return pd.DataFrame(columns=[*KEY, "time", *features])
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[(rows["time"] >= since) & (rows["time"] <= until)]
    return rows.drop_duplicates(KEY)


def training_set(
    rows: pd.DataFrame, store: LabelStore, model: str, features: tuple[str, ...]
) -> TrainingSet:
    """The logged rows (`logged_rows` or `kafka_rows`) that carry a label, oldest first."""
    labels = pd.DataFrame(store.labels_of(model), columns=[*KEY, "label"])
    joined = rows.merge(labels, on=KEY, how="inner").sort_values("time", kind="stable")
    return TrainingSet(
        features,
        joined[list(features)].to_numpy(np.float32),
        joined["label"].to_numpy(np.int64),
        joined["time"].to_numpy(np.float64),
    )


def parquet_rows(
    directory: Path, model: str, features: tuple[str, ...], since: float, until: float
) -> pd.DataFrame:
    return logged_rows(log_files(directory, model, since, until), features, since, until)
