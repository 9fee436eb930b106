"""Helpers for testing code that uses watcher and the Anthropic SDK, without network or API key."""

from watcher._fake import FakeAnthropic, FakeReply, RecordedRequest
from watcher._fake._capture import OTLPReceiver, ReceivedSpan, SpanCapture
from watcher._fake._daemon_process import DaemonProcess

__all__ = [
    "DaemonProcess",
    "FakeAnthropic",
    "FakeReply",
    "OTLPReceiver",
    "ReceivedSpan",
    "RecordedRequest",
    "SpanCapture",
]
