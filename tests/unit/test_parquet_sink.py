"""The Parquet sink: hive layout both readers decode, rotation, hidden in-progress files,
signature changes, odd model names, tally counts and recovery after a failed file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from serve_app.predictions import parquet_sink
from serve_app.predictions.parquet_sink import ParquetSink, dataset
from serve_app.predictions.records import FIELDS, LoggedBatch, key_hash, rows_of
from serve_app.predictions.sinks import SHUTDOWN, Tally

SECRET = b"unit-test-secret"
DAY1 = 1_780_000_000.0  # 2026-05-28 UTC
DAY2 = DAY1 + 86_400.0
FEATURES = tuple(f"f{i}" for i in range(5))
BIG = 1 << 40  # no size rotation
rng = np.random.default_rng(7)


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


def batch(
    model: str = "fraud",
    time: float = DAY1,
    n: int = 3,
    *,
    features: tuple[str, ...] = FEATURES,
    key: str | None = "4111-1111-1111-1111",
    scores_dtype: type = np.float32,
    cache: str | None = None,
    request_id: str | None = None,
) -> LoggedBatch:
    return LoggedBatch(
        request_id=request_id or f"req-{rng.integers(1 << 62)}",
        time=time,
        model=model,
        version=2,
        role="champion",
        lane="fast",
        routing_key=key,
        features=features,
        rows=rng.normal(size=(n, len(features))).astype(np.float32),
        scores=rng.random(n).astype(scores_dtype),
        threshold=0.5,
        latency_ms=1.25,
        cache=cache,
    )


def sink(root: Path, **options: Any) -> tuple[ParquetSink, Tally, Clock]:
    tally, clock = Tally(), Clock()
    options = {"max_file_bytes": BIG, "max_file_age_s": 300.0, "writer_tag": "r1"} | options
    made = ParquetSink(root, tally, SECRET, clock=clock, **options)
    return made, tally, clock


def expected(batches: list[LoggedBatch]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["request_id"], r["row"]): r for b in batches for r in rows_of(b, SECRET)}


def by_row(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["request_id"], r["row"]): r for r in records}


def duck(root: Path, where: str = "") -> list[dict[str, Any]]:
    sql = (
        f"select * from read_parquet('{root}/**/*.parquet', hive_partitioning=true,"
        f" union_by_name=true) {where}"
    )
    return duckdb.sql(sql).arrow().read_all().to_pylist()


def files(root: Path, pattern: str = "*.parquet") -> list[Path]:
    return sorted(path for path in root.rglob(pattern) if path.is_file())


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name in FIELDS:
        if name == "features":  # by name: the struct may carry other versions' fields
            assert {k: got[name][k] for k in want[name]} == want[name]
        else:
            assert got[name] == want[name], name
    assert str(got["date"]) == str(np.datetime64(int(want["time"]), "s").astype("M8[D]"))


def test_two_models_two_dates_read_back_by_pyarrow_and_duckdb(tmp_path: Path) -> None:
    made, tally, _ = sink(tmp_path)
    batches = [
        batch("fraud", DAY1, 3),
        batch("fraud", DAY2, 2, key=None, cache="hit"),
        batch("fraud-eu", DAY1, 1, scores_dtype=np.float64, cache="miss"),
        batch("fraud-eu", DAY2 + 3600, 4),
    ]
    made.write(batches[:2])
    made.write(batches[2:])
    made.close(5.0)
    want = expected(batches)
    assert len(files(tmp_path)) == 4 and not files(tmp_path, ".*")
    for records in (
        dataset(tmp_path).to_table().to_pylist(),
        ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().to_pylist(),
        pq.read_table(tmp_path).to_pylist(),  # what a model column in the file would break
        duck(tmp_path),
    ):
        got = by_row(records)
        assert got.keys() == want.keys()
        for index, record in want.items():
            assert_same(got[index], record)
    hashed = by_row(duck(tmp_path))[(batches[0].request_id, 0)]["key_hash"]
    assert hashed == key_hash(SECRET, "fraud", batches[0].routing_key)
    written, dropped = tally.take()
    assert written == {("fraud", "parquet"): 5, ("fraud-eu", "parquet"): 5} and not dropped


def test_partition_pruning_and_no_raw_key_in_any_file(tmp_path: Path) -> None:
    made, _, _ = sink(tmp_path)
    raw = "5500-0000-0000-0004"
    made.write([batch("a", DAY1, key=raw), batch("b", DAY2, key=raw)])
    made.close(5.0)
    for path in files(tmp_path):
        assert raw.encode() not in path.read_bytes()
    assert raw not in str(files(tmp_path))
    pruned = duck(tmp_path, "where model = 'b'")
    assert {r["model"] for r in pruned} == {"b"}
    assert all(r["key_hash"] == key_hash(SECRET, "b", raw) for r in pruned)
    table = dataset(tmp_path).to_table(filter=ds.field("date") == "2026-05-28")
    assert set(table.column("model").to_pylist()) == {"a"}


def test_in_progress_files_are_hidden_until_closed(tmp_path: Path) -> None:
    made, _, _ = sink(tmp_path)
    made.write([batch(), batch()])
    assert files(tmp_path) == []
    (hidden,) = files(tmp_path, "*")
    assert hidden.name.startswith(".") and hidden.name.endswith(".inprogress")
    assert dataset(tmp_path).count_rows() == 0
    with pytest.raises(duckdb.IOException):  # no file matches the glob
        duck(tmp_path)
    made.close(5.0)
    assert len(duck(tmp_path)) == 6 and files(tmp_path, ".*") == []


def test_rotation_by_size(tmp_path: Path) -> None:
    made, tally, clock = sink(tmp_path, max_file_bytes=1024)
    for count in (1, 2, 3):
        made.write([batch(n=100)])
        assert len(files(tmp_path)) == count - 1  # full, renamed on the next tick or write
        made.tick(clock.now)
        assert len(files(tmp_path)) == count and files(tmp_path, ".*") == []
    names = [path.name for path in files(tmp_path)]
    assert names == ["r1-000001.parquet", "r1-000002.parquet", "r1-000003.parquet"]
    made.close(5.0)
    assert dataset(tmp_path).count_rows() == 300
    assert tally.take()[0] == {("fraud", "parquet"): 300}


def test_rotation_by_age_on_tick_and_on_write(tmp_path: Path) -> None:
    made, _, clock = sink(tmp_path, max_file_age_s=60.0)
    made.write([batch()])
    made.tick(clock.now + 59.0)
    assert files(tmp_path) == []
    made.tick(clock.now + 60.0)
    assert len(files(tmp_path)) == 1
    made.write([batch()])  # opens the next file at clock.now
    clock.now += 61.0
    made.write([batch()])  # the aged file closes before these rows open a new one
    assert len(files(tmp_path)) == 2 and len(files(tmp_path, ".*")) == 1
    made.close(5.0)
    assert [pq.read_metadata(p).num_rows for p in files(tmp_path)] == [3, 3, 3]


def test_rows_wait_for_a_row_group_of_their_own(tmp_path: Path) -> None:
    made, _, _ = sink(tmp_path)
    for _ in range(5):
        made.write([batch(), batch()])
    made.close(5.0)
    (path,) = files(tmp_path)
    assert pq.read_metadata(path).num_row_groups == 1  # not one per write: footers are costly
    assert pq.read_metadata(path).num_rows == 30


def test_a_signature_change_gets_its_own_file_and_both_read_back(tmp_path: Path) -> None:
    made, _, _ = sink(tmp_path)
    old = batch(features=("a", "b"))
    new = batch(features=("a", "c", "b"))
    made.write([old, new, batch(features=("a", "b"))])
    assert len(files(tmp_path, ".*")) == 2  # one open file per signature
    made.close(5.0)
    paths = files(tmp_path)
    assert len(paths) == 2
    assert {tuple(pq.read_schema(p).field("features").type.names) for p in paths} == {
        ("a", "b"),
        ("a", "c", "b"),
    }
    want = expected([old, new])
    for records in (dataset(tmp_path).to_table().to_pylist(), duck(tmp_path)):
        got = by_row(records)
        for index, record in want.items():
            assert_same(got[index], record)
        assert got[(old.request_id, 0)]["features"]["c"] is None


@pytest.mark.parametrize(
    "name", ["fraud model", "team/fraud", "fraude-été ✓", "007", "p%20q", "..", "a=b"]
)
def test_odd_model_names_round_trip(tmp_path: Path, name: str) -> None:
    made, tally, _ = sink(tmp_path)
    made.write([batch(name), batch("plain")])
    made.close(5.0)
    assert {p.parent.parent.parent for p in files(tmp_path)} == {tmp_path}  # one segment
    for records in (dataset(tmp_path).to_table().to_pylist(), duck(tmp_path)):
        assert sorted({r["model"] for r in records}) == sorted({name, "plain"})
    for path in files(tmp_path):  # a file copied out of its folder still names its model
        model = unquote(path.parent.parent.name.removeprefix("model="))
        assert pq.read_schema(path).metadata[b"serve_app.model"].decode() == model
    assert tally.take()[0][(name, "parquet")] == 3


def test_bad_rows_raise_before_anything_is_written(tmp_path: Path) -> None:
    made, tally, _ = sink(tmp_path)
    bad = dataclasses.replace(batch(), features=("just", "two"))
    with pytest.raises(ValueError, match="rows"):
        made.write([batch(), bad])
    with pytest.raises(ValueError):  # numpy's: rows of other widths under one signature
        made.write([batch(), dataclasses.replace(batch(), rows=np.zeros((3, 2), np.float32))])
    assert files(tmp_path, "*") == [] and tally.take() == ({}, {})


def test_an_unwritable_partition_fails_one_call_and_the_next_works(tmp_path: Path) -> None:
    made, tally, _ = sink(tmp_path)
    blocker = tmp_path / "model=blocked"
    blocker.write_text("not a directory")  # makedirs fails, even for root
    with pytest.raises(OSError):
        made.write([batch("ok"), batch("blocked")])
    assert tally.take() == ({}, {})  # the writer counts this call's rows as parquet_error
    blocker.unlink()
    made.write([batch("ok"), batch("blocked")])
    made.close(5.0)
    assert dataset(tmp_path).count_rows() == 6  # none of the failed call's rows were kept
    assert len(files(tmp_path)) == 2 and files(tmp_path, ".*") == []
    assert tally.take()[0] == {("ok", "parquet"): 3, ("blocked", "parquet"): 3}


def test_a_failed_row_group_drops_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made, tally, _ = sink(tmp_path)
    made.write([batch("a"), batch("b")])  # buffered in two open files
    tally.take()
    real = parquet_sink._File.flush

    def failing(self: parquet_sink._File) -> None:
        if self.key[0] == "b":
            raise OSError("disk full")
        real(self)

    monkeypatch.setattr(parquet_sink, "ROW_GROUP_BYTES", 1)  # both row groups are due
    monkeypatch.setattr(parquet_sink._File, "flush", failing)
    with pytest.raises(OSError, match="disk full"):
        made.write([batch("a"), batch("b")])
    assert tally.take() == ({}, {("b", "parquet_error"): 3})  # b's earlier rows, not this call's
    monkeypatch.setattr(parquet_sink._File, "flush", real)
    made.write([batch("b")])
    made.close(5.0)
    rows = dataset(tmp_path).to_table().to_pylist()
    counts = {m: sum(r["model"] == m for r in rows) for m in ("a", "b")}
    assert counts == {"a": 3, "b": 3}  # a: the first call's; b: the new file's
    assert files(tmp_path, ".*") == []
    assert tally.take() == ({("b", "parquet"): 3}, {})


def test_buffers_beyond_the_budget_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made, _, clock = sink(tmp_path)
    made.write([batch("small", n=1), batch("large", n=50)])
    monkeypatch.setattr(parquet_sink, "BUFFER_BYTES", 1_000)
    made.tick(clock.now)
    sizes = {p.parent.parent.name: p.stat().st_size for p in files(tmp_path, ".*")}
    assert sizes["model=small"] == 4 < sizes["model=large"]  # only the largest was written
    made.close(5.0)
    assert dataset(tmp_path).count_rows() == 51


def test_close_past_its_deadline_counts_shutdown(tmp_path: Path) -> None:
    made, tally, _ = sink(tmp_path)
    made.write([batch("a")])
    tally.take()
    made.close(-1.0)
    assert tally.take() == ({}, {("a", SHUTDOWN): 3})
    assert files(tmp_path, "*") == []


def test_a_restarted_writer_with_the_same_tag_never_overwrites(tmp_path: Path) -> None:
    for _ in range(2):
        made, _, _ = sink(tmp_path)
        made.write([batch()])
        made.close(5.0)
    assert [p.name for p in files(tmp_path)] == ["r1-000001.parquet", "r1-000002.parquet"]
    assert dataset(tmp_path).count_rows() == 6


def test_values_are_exact_and_nan_decides_false(tmp_path: Path) -> None:
    made, _, _ = sink(tmp_path)
    one = batch(n=2, scores_dtype=np.float64)
    one.scores[:] = [0.5, math.nan]
    made.write([one])
    made.close(5.0)
    got = sorted(dataset(tmp_path).to_table().to_pylist(), key=lambda r: r["row"])
    assert [r["decision"] for r in got] == [True, False]
    assert got[0]["score"] == 0.5 and math.isnan(got[1]["score"])


def test_writer_tag_must_make_visible_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        sink(tmp_path, writer_tag=".hidden")
    made, _, _ = sink(tmp_path, writer_tag="app#router/1")
    made.write([batch()])
    made.close(5.0)
    assert [p.name for p in files(tmp_path)] == ["app%23router%2F1-000001.parquet"]
