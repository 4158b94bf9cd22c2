"""Logging for code that a rule runs: everything goes to the rule's ``log:`` file."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[logging.Logger]:
    """Send logging, stdout and stderr to ``path`` (a rule's log file) for the duration.

    With ``path=None`` (a direct call from a test or the command line) logging goes to stderr.
    An exception is logged with its traceback before it propagates, so the log explains a failure.
    """
    root = logging.getLogger()
    if path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        yield root
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        previous_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield root
        except BaseException:
            root.exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(previous_level)
