"""Hostile request bodies that must be answered with a typed 400 over both transports
(issue 15 item 6): nesting that overflows a recursive parser, lone UTF-16 surrogates in the
routing fields, a string larger than any field takes."""

from __future__ import annotations

import json

from tests.conftest import inference, new_uuid

_TASK = json.dumps(inference())


def _with(field: str, raw_value: str) -> str:
    """`[task]` with `field` set to the raw JSON text `raw_value`."""
    task = json.loads(_TASK)
    task[field] = "PLACEHOLDER"
    return "[" + json.dumps(task).replace('"PLACEHOLDER"', raw_value) + "]"


HOSTILE_BODIES = {
    "arrays 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "objects 5,000 deep": '{"a":' * 5_000 + "1" + "}" * 5_000,
    "a parameter 40 deep": _with("positivePrompt", "[" * 40 + "]" * 40),
    "lone surrogate taskUUID": _with("taskUUID", '"\\ud800"'),
    "lone surrogate taskType": _with("taskType", '"\\ud800"'),
    "lone low surrogate in a prompt": _with("positivePrompt", '"a cat \\udc00 in a hat"'),
    "lone surrogate in a key": '[{"taskType": "ping", "ping": true, "\\ud800": 1}]',
    "lone surrogate in getResponse": '[{"taskType": "getResponse", "taskUUID": "\\ud800"}]',
    "getResponse of a surrogate pair": json.dumps([{"taskType": "getResponse", "taskUUID": "\U0001f600"}])
    .replace("\\ud83d\\ude00", "\\ud83d\\ud800"),
    "a 40 MB prompt": _with("positivePrompt", '"' + "a" * (40 * 1024 * 1024) + '"'),
}
"""Name → body text (ASCII: surrogates are `\\u` escapes, as JSON encoders write them)."""

PAIRED_SURROGATES = json.dumps([{"taskType": "getResponse", "taskUUID": new_uuid(), "x": "\U0001f600"}])
"""A valid body whose emoji is escaped as a surrogate pair (what `json.dumps` sends)."""
