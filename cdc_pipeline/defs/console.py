"""A console logger for jobs run from a terminal (``dagster job execute``): INFO and above,
one line per message, and a failed step as the project's one sentence instead of a stack trace.

Dagster's default console logger prints every DEBUG event of the run and, for a failed step,
the exception with its stack trace. A CI log then buries the one sentence that says what is
wrong and what to do. The run's event log (what the UI shows, with the full error) is written
by the instance, not by this logger, so nothing is lost there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, TextIO

import dagster as dg

from cdc_pipeline.core.settings import scrub_secrets


class _Sentences(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        job = meta.get("job_name") or "dagster"
        event = meta.get("dagster_event")
        if event is not None and event.is_step_failure:
            return f"{job}: failed: {failure_sentence(event)}"
        message = meta.get("orig_message") or record.getMessage()
        return f"{job}: {scrub_secrets(str(message))}"


def failure_sentence(event: Any) -> str:
    """The sentence of a failed step: a ``dg.Failure``'s description (the project's sentence,
    built from redacted forms only: ``core.errors``), else the exception's type and message
    with any secret scrubbed."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return " ".join(str(data.user_failure_data.description).split())
    error = data.error
    while error is not None and error.cause is not None:  # Dagster's wrapper: say the cause
        error = error.cause
    text = (error.message if error is not None else "unknown error").strip()
    return scrub_secrets(" ".join(text.split()))


def _terminal() -> TextIO:
    """The process's stderr as it was when the code location loaded. Dagster captures a step's
    stdout and stderr into its compute logs and copies them back to the terminal from another
    thread, which can lose the last lines when the process exits right after them (measured:
    the failure's sentence missing in 5 of 10 failed ``dagster job execute`` runs)."""
    with contextlib.suppress(OSError, ValueError):
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, errors="replace")
    return sys.stderr


_TERMINAL = _terminal()


@dg.logger(description="INFO and above, one line each; a failed step as its one sentence.")
def sentence_console(_init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("cdc_pipeline", level=logging.INFO)
    handler = logging.StreamHandler(_TERMINAL)
    handler.setFormatter(_Sentences())
    logger.addHandler(handler)
    return logger
