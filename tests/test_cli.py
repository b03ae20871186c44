"""The `kiln` command: keys and the model catalog, as an operator uses them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn

from kiln.cli import main
from kiln.keys import KeyStore
from kiln.models import Catalog
from kiln.storage import Database
from tests.engine.annotators.test_depth import tiny_depth_model


def kiln(data_dir, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )


def test_keys_create_stores_only_a_hash(tmp_path):
    result = kiln(tmp_path, "keys", "create", "--name", "ci")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("kiln_")
    db = Database(tmp_path / "kiln.sqlite3")
    assert KeyStore(db).authenticate(key) is not None
    assert KeyStore(db).authenticate(key + "x") is None
    assert key.encode() not in (tmp_path / "kiln.sqlite3").read_bytes()
    assert "ci" in kiln(tmp_path, "keys", "list").stdout


def test_models_add_list_remove(tmp_path, data_dir):
    folder = data_dir / "models" / "tiny-sd"
    added = kiln(tmp_path, "models", "add", str(folder), "--air", "civitai:4201@130072",
                 "--architecture", "sd1x", "--default-steps", "3", "--tags", "a,b")
    assert added.returncode == 0, added.stderr
    entry = Catalog(Database(tmp_path / "kiln.sqlite3")).get("civitai:4201@130072")
    assert entry.defaults.steps == 3 and entry.tags == ("a", "b")
    assert "civitai:4201@130072" in kiln(tmp_path, "models", "list").stdout
    assert kiln(tmp_path, "models", "remove", "civitai:4201@130072").returncode == 0
    assert Catalog(Database(tmp_path / "kiln.sqlite3")).find("civitai:4201@130072") is None


def test_keys_and_the_catalog_live_in_postgresql_when_the_url_says_so(tmp_path, data_dir, postgres):
    url = postgres.create_database()
    key = kiln(tmp_path, "keys", "create", "--name", "on-pg", KILN_DATABASE_URL=url).stdout.strip()
    assert "on-pg" in kiln(tmp_path, "keys", "list", KILN_DATABASE_URL=url).stdout
    added = kiln(tmp_path, "models", "add", str(data_dir / "models" / "tiny-sd"), "--air",
                 "civitai:4201@130072", "--architecture", "sd1x", "--no-load-check",
                 KILN_DATABASE_URL=url)
    assert added.returncode == 0, added.stderr
    db = Database(url)
    assert KeyStore(db).authenticate(key) is not None
    assert Catalog(db).get("civitai:4201@130072").architecture == "sd1x"
    db.close()
    assert not (tmp_path / "kiln.sqlite3").exists()  # nothing went to the data dir's SQLite
    doctor = kiln(tmp_path, "doctor", KILN_DATABASE_URL=url)
    assert "ok   database: postgresql+psycopg://kiln@/" in doctor.stdout, doctor.stdout


def test_an_unreachable_database_is_named_not_a_traceback(tmp_path):
    unreachable = "postgresql://kiln@127.0.0.1:1/kiln"
    listed = kiln(tmp_path, "keys", "list", KILN_DATABASE_URL=unreachable)
    assert listed.returncode == 1
    assert "kiln: Kiln's database does not answer" in listed.stderr
    assert "Traceback" not in listed.stderr
    doctor = kiln(tmp_path, "doctor", KILN_DATABASE_URL=unreachable)
    assert "FAIL database: postgresql+psycopg://kiln@127.0.0.1:1/kiln" in doctor.stdout
    assert "fix: check KILN_DATABASE_URL" in doctor.stdout


@pytest.mark.parametrize("air", ["nope", "civitai:@1", "a:b"])
def test_models_add_refuses_a_malformed_air(tmp_path, data_dir, air):
    result = kiln(tmp_path, "models", "add", str(data_dir), "--air", air, "--architecture", "sd1x")
    assert result.returncode == 2
    assert "AIR" in result.stderr


def test_models_add_registers_an_annotator_only_with_its_conditioning(tmp_path):
    folder = tiny_depth_model(tmp_path / "dpt")
    args = ("models", "add", folder, "--air", "kiln:depth@1", "--architecture", "sd1x", "--category", "annotator")
    refused = kiln(tmp_path, *args)
    assert refused.returncode == 2 and "conditioning" in refused.stderr
    built_in = kiln(tmp_path, *args, "--conditioning", "canny")  # needs no annotator
    assert built_in.returncode == 2 and "openpose" in built_in.stderr
    assert kiln(tmp_path, *args, "--conditioning", "depth").returncode == 0
    entry = Catalog(Database(tmp_path / "kiln.sqlite3")).get("kiln:depth@1")
    assert (entry.category, entry.conditioning) == ("annotator", "depth")


def test_models_add_refuses_annotator_files_that_do_not_load(tmp_path, data_dir):
    folder = str(data_dir / "models")  # a folder, but no depth-estimation model
    result = kiln(tmp_path, "models", "add", folder, "--air", "kiln:depth@1", "--architecture", "sd1x",
                  "--category", "annotator", "--conditioning", "depth")
    assert result.returncode == 2
    assert f"The 'depth' annotator at {folder} could not be loaded" in result.stderr
    assert kiln(tmp_path, "models", "list").stdout.strip() == ""


def test_models_add_refuses_a_missing_path(tmp_path):
    result = kiln(tmp_path, "models", "add", str(tmp_path / "missing"), "--air", "x:1@1",
                  "--architecture", "sd1x")
    assert result.returncode == 2


def test_serve_creates_a_first_key_and_prints_a_working_example(tmp_path, data_dir):
    import os
    import shutil
    import socket
    import subprocess

    shutil.copytree(data_dir / "models", tmp_path / "models")
    assert kiln(tmp_path, "models", "init").returncode == 0  # registers the copied demo models
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "KILN_PORT": str(port), "KILN_TORCH_THREADS": "1", "KILN_API_KEYS": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "--data-dir", str(tmp_path), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        lines = []
        for line in server.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Uvicorn running" in line:  # the socket is bound (startup completes before it)
                break
        output = "".join(lines)
        assert "Created the first API key" in output
        (command,) = [line.strip() for line in lines if line.strip().startswith("curl ")]
        for _ in range(2):  # pasting it twice works: each run sends a fresh taskUUID
            result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
            assert '"imageURL"' in result.stdout, result.stdout + result.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_kiln_demo_reaches_the_training_tools(tmp_path):
    result = kiln(tmp_path, "demo", "--help")
    assert result.returncode == 0
    assert "train-inpaint" in result.stdout


def test_serve_prints_a_new_key_once_then_only_where_it_is_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    # as if the process stopped right after writing: the file must be private from its creation
    monkeypatch.setattr(Path, "chmod", lambda *args, **kwargs: None)
    umask = os.umask(0o022)
    try:
        assert main(["--data-dir", str(tmp_path), "serve"]) == 0
        first = capsys.readouterr().out
        assert main(["--data-dir", str(tmp_path), "serve"]) == 0
        second = capsys.readouterr().out
    finally:
        os.umask(umask)
    path = (tmp_path / "dev-api-key").resolve()
    key = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.count(key) == 1
    assert key not in second and str(path) in second
    # the example still sends the key: run it in bash with curl and python3 stubbed out
    (curl,) = [line for line in second.splitlines() if line.strip().startswith("curl ")]
    stubs = 'curl() { printf "%s\\n" "$@"; }; python3() { echo 0c4f1b5e-0000-4000-8000-000000000000; }\n'
    args = subprocess.run(["bash", "-c", stubs + curl], capture_output=True, text=True, timeout=30).stdout
    assert f"Authorization: Bearer {key}" in args.splitlines()
