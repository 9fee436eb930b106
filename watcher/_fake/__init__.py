"""A fake of the Anthropic HTTP API for tests; the public names are re-exported by `watcher.testing`."""

from watcher._fake._reply import FakeReply, RecordedRequest
from watcher._fake._server import FakeAnthropic

__all__ = ["FakeAnthropic", "FakeReply", "RecordedRequest"]
