"""Logs: one line per task (taskUUID, type, key id, outcome, duration; never the key), and
`KILN_LOG_FORMAT=json` making every line of `kiln serve`, access lines included, a JSON object."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from kiln.logs import JSONFormatter
from tests.conftest import API_KEY, inference, new_uuid, post


@pytest.fixture
def task_lines():
    """The JSON lines `kiln.tasks` writes during the test."""
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JSONFormatter().format(record)))

    handler = Collect()
    logger = logging.getLogger("kiln.tasks")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_every_task_gets_a_line_with_its_outcome_and_never_the_key(client, task_lines):
    good, bad = inference(), inference(width=100)
    post(client, [good, bad, {"taskType": "ping"}])
    by_uuid = {line.get("taskUUID"): line for line in task_lines}
    assert by_uuid[good["taskUUID"]]["outcome"] == "success"
    assert by_uuid[bad["taskUUID"]]["outcome"] == "invalidWidth"
    assert by_uuid[None]["taskType"] == "ping"
    for line in task_lines:
        assert {"time", "level", "taskType", "keyId", "outcome", "durationMs"} <= line.keys()
        assert len(line["keyId"]) == 12 and API_KEY not in json.dumps(line)
    assert by_uuid[good["taskUUID"]]["durationMs"] > by_uuid[bad["taskUUID"]]["durationMs"]


def test_kiln_serve_logs_json_lines_and_preloads_when_asked(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "KILN_LOG_FORMAT": "json", "KILN_API_KEYS": API_KEY,
           "KILN_DATA_DIR": str(tmp_path), "KILN_PORT": str(port), "KILN_TORCH_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "kiln.cli", "serve", "--preload", "kiln:none@1"],
                              env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "kiln serve did not start"
            time.sleep(0.2)
        deadline = time.monotonic() + 60
        while (ready := httpx.get(f"{base}/ready").json())["checks"]["models"]["kiln:none@1"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ready["status"] == "unavailable"  # the preloaded model is not in the catalog
        assert ready["checks"]["models"]["kiln:none@1"].startswith("failed")
        task_uuid = new_uuid()
        httpx.post(f"{base}/v1", headers={"Authorization": f"Bearer {API_KEY}"},
                   json=[{"taskType": "modelSearch", "taskUUID": task_uuid}])
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    # the banner (the curl example) is plain text on stdout; every log line is JSON
    logged = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line.get("taskUUID") == task_uuid and line["outcome"] == "success" for line in logged)
    access = [line for line in logged if line["logger"] == "uvicorn.access"]
    assert any(line["path"] == "/v1" and line["status"] == 200 for line in access)
    assert not [line for line in output.splitlines()
                if line.startswith(("INFO:", "WARNING:", "ERROR:"))], output
