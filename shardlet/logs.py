"""structlog set-up: key/value events on stderr, console or JSON."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", fmt: str = "console") -> None:
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    # JSON (Helm, every Ray shard) needs the exception turned into data first, or the line says
    # only "exc_info": true; dict_tracebacks keeps type, message and frames as fields to query
    render: list[structlog.typing.Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()] if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
