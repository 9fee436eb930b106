"""Exact USD pricing of Claude API calls from token usage and a dated price table."""

from watcher.pricing._ceiling import Ceiling
from watcher.pricing._engine import PriceTable
from watcher.pricing._load import default_price_table, load_price_table
from watcher.pricing._names import bedrock_endpoint, vertex_endpoint
from watcher.pricing._usage import Cost, TokenUsage

__all__ = [
    "Ceiling",
    "Cost",
    "PriceTable",
    "TokenUsage",
    "bedrock_endpoint",
    "default_price_table",
    "load_price_table",
    "vertex_endpoint",
]
