"""Progress of long steps (model conversion and boot, SAE build and quality checks, null distributions).

Every step is logged on the ``pytest_mechclaim`` logger (so ``--log-cli-level=INFO``, caplog and any handler see
it); the plugin adds a handler that writes the steps to the terminal reporter past output capture
(``--mechclaim-progress``: ``lines`` = one line per finished step, the default; ``live`` = a line when a step starts
too; ``off``). Library code only calls ``step``; it never writes to the terminal itself.
"""

from __future__ import annotations

import contextlib
import logging
import time

logger = logging.getLogger("pytest_mechclaim")
PROGRESS_MODES = ("lines", "live", "off")
PHASE = "mechclaim_progress"  # the LogRecord attribute that marks a progress event: "start" | "done" | "failed"


@contextlib.contextmanager
def step(what: str):
    """Log ``what`` when it starts and when it ends, with its duration."""
    started = time.perf_counter()
    logger.info("%s ...", what, extra={PHASE: "start"})
    try:
        yield
    except BaseException:
        logger.info("%s failed after %.1f s", what, time.perf_counter() - started, extra={PHASE: "failed"})
        raise
    logger.info("%s done in %.1f s", what, time.perf_counter() - started, extra={PHASE: "done"})


class TerminalProgress(logging.Handler):
    """Writes progress events to the terminal reporter, bypassing output capture (like pytest's live logging)."""

    def __init__(self, terminalreporter, capture_manager, mode: str) -> None:
        super().__init__(logging.INFO)
        self.tr, self.capman, self.mode = terminalreporter, capture_manager, mode

    def emit(self, record: logging.LogRecord) -> None:
        phase = getattr(record, PHASE, None)
        if phase is None or (phase == "start" and self.mode != "live"):
            return
        guard = self.capman.global_and_fixture_disabled() if self.capman else contextlib.nullcontext()
        with guard:
            self.tr.ensure_newline()
            self.tr.write_line(f"mechclaim: {record.getMessage()}")
