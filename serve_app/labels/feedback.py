"""Labels as clients send them: validated row by row, so one bad row never fails a batch.

Both ways in (`POST /v2/models/{name}/feedback` and `serve-app labels import FILE.csv`)
end here. Messages name the field and the row, never a value: a label batch sits next to
customers' transactions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serve_app.protocol.errors import BadRequest, PayloadTooLarge

MAX_REQUEST_ID = 128

# Outcomes of one label row (the `status` of each answer row).
ACCEPTED = "accepted"
DUPLICATE = "duplicate"  # the same label was recorded before: nothing changes
CONFLICT = "conflict"  # labelled differently before: the first label stands
UNKNOWN_ID = "unknown_id"  # no logged prediction of this model has the request id
UNKNOWN_ROW = "unknown_row"  # the request has no such row
ROW_REQUIRED = "row_required"  # the request scored several rows: say which one
INVALID = "invalid"
OUTCOMES = (ACCEPTED, DUPLICATE, CONFLICT, UNKNOWN_ID, UNKNOWN_ROW, ROW_REQUIRED, INVALID)


@dataclass(frozen=True)
class Label:
    request_id: str
    label: int  # 1 fraud, 0 legitimate
    label_time: float  # Unix seconds: when the outcome became known
    row: int | None = None  # the row of a multi-row request


@dataclass(frozen=True)
class Outcome:
    index: int
    status: str
    request_id: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.request_id is not None:
            answer["request_id"] = self.request_id
        if self.error is not None:
            answer["error"] = self.error
        return answer


def valid_request_id(value: Any) -> bool:
    """1-128 visible ASCII characters: safe to return in a header and to store."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def parse_time(value: Any, now: float) -> float:
    """Unix seconds, or an ISO 8601 string (UTC unless it says otherwise); absent: now."""
    if value is None or value == "":
        return now
    if isinstance(value, bool):
        raise ValueError("label_time must be Unix seconds or an ISO 8601 time")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("label_time must be a finite, non-negative number")
        return float(value)
    if isinstance(value, str):
        try:
            return parse_time(float(value), now)  # a CSV cell holding Unix seconds
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("label_time must be Unix seconds or an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise ValueError("label_time must be Unix seconds or an ISO 8601 time")


def parse_label(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return int(value.strip().lower() in ("1", "true"))
    raise ValueError("label must be 0 or 1 (or false/true)")


def parse_row(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError("row must be a non-negative integer")


def read_item(index: int, item: Any, now: float) -> Label | Outcome:
    """One label row, or the outcome that refuses it."""
    if not isinstance(item, dict):
        return Outcome(index, INVALID, error="each label must be an object")
    request_id = item.get("request_id")
    if not valid_request_id(request_id):
        return Outcome(index, INVALID, error="request_id must be 1-128 visible ASCII characters")
    try:
        return Label(
            request_id,
            parse_label(item.get("label")),
            parse_time(item.get("label_time"), now),
            parse_row(item.get("row")),
        )
    except ValueError as error:
        return Outcome(index, INVALID, request_id, str(error))


def read_batch(payload: Any, max_batch: int) -> list[Any]:
    """The list of label rows in a feedback body: `[...]` or `{"labels": [...]}`."""
    items = payload.get("labels") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise BadRequest("the body must be a list of labels or an object with a 'labels' list")
    if not items:
        raise BadRequest("the batch holds no labels")
    if len(items) > max_batch:
        raise PayloadTooLarge(f"{len(items)} labels exceed the limit of {max_batch} per request")
    return items
