"""The demos: `watcher demo` (the whole loop in ten seconds) and `watcher traffic` (steady fake traffic)."""

from ._run import run_demo
from ._traffic import ROTATION, TrafficStats, run_traffic

__all__ = ["ROTATION", "TrafficStats", "run_demo", "run_traffic"]
