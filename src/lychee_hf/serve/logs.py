"""Structured logs: every record of the server's loggers as one JSON line (access lines are JSON already)."""

import json
import logging
import time

from .middleware import access_log


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == access_log.name:
            return record.getMessage()
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_json_lines(level: int = logging.INFO) -> None:
    """Sends the `lychee_hf.serve` loggers to standard error as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("lychee_hf.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
