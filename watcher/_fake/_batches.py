"""Message Batches that end the moment they are created, with their JSONL results kept in memory."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from watcher._fake._reply import ReplyQueue
from watcher._fake._wire import Json, dumps, error_json, message_json, new_id

__all__ = ["BatchStore"]


class BatchStore:
    """The batches created on one fake server; thread-safe.

    Each request of a new batch takes one reply from the queue at creation time: a 200 reply
    makes it `succeeded` (usage `service_tier` "batch"), any other status makes it `errored`.
    """

    def __init__(self, replies: ReplyQueue) -> None:
        self._replies = replies
        self._batches: dict[str, Json] = {}
        self._results: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def create(self, body: object, base_url: str) -> Json:
        """Run every request of a batch-create `body` and return the ended batch.

        Raises ValueError, whose message suits a 400 reply, when `body` is not
        `{"requests": [{"custom_id": str, "params": {...}}, ...]}`.
        """
        requests = _requests_of(body)
        batch_id = new_id("msgbatch_fake_")
        lines = [self._result_line(custom_id, params) for custom_id, params in requests]
        batch = _batch_json(batch_id, base_url, lines)
        with self._lock:
            self._batches[batch_id] = batch
            self._results[batch_id] = b"".join(dumps(line) + b"\n" for line in lines)
        return batch

    def get(self, batch_id: str) -> Json | None:
        """Return the batch with `batch_id`, or None if there is none."""
        with self._lock:
            return self._batches.get(batch_id)

    def results(self, batch_id: str) -> bytes | None:
        """Return the JSONL results of the batch with `batch_id`, or None if there is none."""
        with self._lock:
            return self._results.get(batch_id)

    def delete(self, batch_id: str) -> Json | None:
        """Forget the batch with `batch_id`; return the deletion receipt, or None if there is none."""
        with self._lock:
            if self._batches.pop(batch_id, None) is None:
                return None
            del self._results[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def page(self) -> Json:
        """Return every batch, newest first, as one page of the list endpoint."""
        with self._lock:
            data = list(reversed(self._batches.values()))
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}

    def clear(self) -> None:
        """Forget every batch."""
        with self._lock:
            self._batches.clear()
            self._results.clear()

    def _result_line(self, custom_id: str, params: dict[str, object]) -> Json:
        reply = self._replies.take()
        if reply.status != 200:
            error = error_json(reply.status, f"Fake error reply with status {reply.status}.", new_id("req_"))
            return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
        model = str(params.get("model", "claude-fake"))
        message = message_json(reply, model, service_tier="batch")
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def _requests_of(body: object) -> list[tuple[str, dict[str, object]]]:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise ValueError("requests: expected a non-empty list of {custom_id, params} objects")
    parsed = []
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not isinstance(params, dict):
            raise ValueError(f"requests.{index}: expected a custom_id string and a params object")
        parsed.append((custom_id, params))
    return parsed


def _batch_json(batch_id: str, base_url: str, lines: list[Json]) -> Json:
    now = datetime.now(UTC)
    errored = sum(1 for line in lines if _result_type(line) == "errored")
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": len(lines) - errored,
            "errored": errored,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": _timestamp(now),
        "ended_at": _timestamp(now),
        "expires_at": _timestamp(now + timedelta(hours=24)),
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch_id}/results",
    }


def _result_type(line: Json) -> object:
    result = line["result"]
    return result.get("type") if isinstance(result, dict) else None


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
