"""Helpers for testing code that uses watcher and the Anthropic SDK, without network or API key."""

from watcher._capture import OTLPReceiver, ReceivedSpan, SpanCapture
from watcher._daemon_process import DaemonProcess
from watcher._fake import FakeAnthropic, FakeReply, RecordedRequest

__all__ = [
    "DaemonProcess",
    "FakeAnthropic",
    "FakeReply",
    "OTLPReceiver",
    "ReceivedSpan",
    "RecordedRequest",
    "SpanCapture",
]
