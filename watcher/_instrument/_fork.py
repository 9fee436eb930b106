"""Restarting background parts in a forked child, where no thread of the parent runs."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["in_child"]


def in_child(restart: Callable[[], None]) -> None:
    """Calls the bound method `restart` in every child forked from now on, while its object lives.

    Only the forking thread survives `os.fork()` (gunicorn --preload, celery prefork,
    multiprocessing's fork start method): a part that works on its own thread must start a new
    one, with fresh locks, in the child. The object is held weakly, so registering does not keep
    it alive; `restart` is expected to do nothing for a part that was stopped.
    """
    method = weakref.WeakMethod(restart)

    def after_fork() -> None:
        bound = method()
        if bound is not None:
            bound()

    os.register_at_fork(after_in_child=after_fork)
