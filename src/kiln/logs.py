"""The server's log output: text (default) or one JSON object a line (`KILN_LOG_FORMAT=json`).

Every task gets one line when it ends (`log_task`): its taskUUID, task type, the key's id (a
prefix of the key's SHA-256, never the key), the outcome (`success` or the error code) and the
duration. uvicorn's access and error logs use the same format.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOG_FORMATS = ("text", "json")
TASK_FIELDS = ("taskUUID", "taskType", "keyId", "outcome", "durationMs")
"""The fields of a task's line (JSON keys; `extra` of the log record)."""

task_log = logging.getLogger("kiln.tasks")


def log_task(task_uuid: str | None, task_type: str | None, key_id: str | None, outcome: str,
             duration_s: float) -> None:
    """One line for a task that ended: answered, failed or refused."""
    fields = {"taskUUID": task_uuid, "taskType": task_type,
              "keyId": key_id[:12] if key_id else None, "outcome": outcome,
              "durationMs": round(duration_s * 1000, 1)}
    # %r: a client's taskUUID or taskType cannot forge a line of the text log
    task_log.info("task %r %r key %s: %s in %.1f ms", task_uuid, task_type, fields["keyId"],
                  outcome, fields["durationMs"], extra=fields)


class JSONFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO 8601), level, logger, message, the task
    fields when present, uvicorn's access fields (client, method, path, status) for access
    lines, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            entry.update(message=f"{method} {path} {status}", client=client, method=method,
                         path=path, status=status)
        else:
            entry["message"] = record.getMessage()
        entry.update({name: getattr(record, name) for name in TASK_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary (also uvicorn's `log_config`) for Kiln's and
    uvicorn's loggers in `log_format`: "text" or "json"."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")
    formatters: dict[str, dict[str, Any]]
    if log_format == "json":
        formatters = {"default": {"()": JSONFormatter}, "access": {"()": JSONFormatter}}
    else:
        formatters = {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "access": {"()": "uvicorn.logging.AccessFormatter",
                       "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'},
        }
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "handlers": {"default": {**handler, "formatter": "default"},
                     "access": {**handler, "formatter": "access", "stream": "ext://sys.stdout"}},
        "loggers": {
            "kiln": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }
