"""Buffered counters: per-request counts reach Ray's counter summed per label set."""

from __future__ import annotations

from serve_app.metrics import BufferedCounter


class RecordingCounter:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append((value, tags))


def test_flush_adds_each_label_sets_sum_once_then_nothing():
    target = RecordingCounter()
    counter = BufferedCounter(target)  # type: ignore[arg-type]
    for _ in range(3):
        counter.inc(tags={"model": "a", "outcome": "ok"})
    counter.inc(5, tags={"model": "b", "outcome": "ok"})
    assert target.calls == []
    counter.flush()
    assert sorted(target.calls, key=lambda call: call[1]["model"]) == [
        (3, {"model": "a", "outcome": "ok"}),
        (5, {"model": "b", "outcome": "ok"}),
    ]
    counter.flush()
    assert len(target.calls) == 2
