"""`kiln doctor` and the settings check at start: each problem is named with what to fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kiln.models import Catalog, CatalogEntry
from kiln.settings import Settings
from kiln.storage import Database


def kiln(data_dir, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.cli", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_doctor_passes_on_a_healthy_data_dir_and_names_missing_model_files(tmp_path, data_dir):
    catalog = Catalog(Database(tmp_path / "kiln.sqlite3"))
    catalog.add(CatalogEntry(air="kiln:here@1", name="here", version="1", category="checkpoint",
                             architecture="sd1x", path=str(data_dir / "models" / "tiny-sd")))
    healthy = kiln(tmp_path, "doctor")
    assert healthy.returncode == 0, healthy.stdout
    assert "FAIL" not in healthy.stdout and "ok   device: torch" in healthy.stdout
    gone = tmp_path / "gone"
    gone.mkdir()
    catalog.add(CatalogEntry(air="kiln:gone@1", name="gone", version="1", category="checkpoint",
                             architecture="sd1x", path=str(gone)))
    gone.rmdir()  # deleted after it was registered
    broken = kiln(tmp_path, "doctor")
    assert broken.returncode == 1
    assert "FAIL catalog: 1 of 2 models have no files: kiln:gone@1" in broken.stdout
    assert "kiln models remove AIR" in broken.stdout


def test_doctor_names_a_cuda_device_that_is_not_there(tmp_path):
    result = kiln(tmp_path, "doctor", KILN_DEVICE="cuda:7")
    assert result.returncode == 1 and "FAIL device" in result.stdout and "KILN_DEVICE" in result.stdout


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("KILN_PORT", "eighty", "KILN_PORT must be an integer from 1 to 65535, got 'eighty'"),
    ("KILN_PORT", "70000", "KILN_PORT must be an integer from 1 to 65535"),
    ("KILN_NSFW_THRESHOLD", "1.5", "KILN_NSFW_THRESHOLD must be a number from 0 to 1"),
    ("KILN_DELIVERY_ATTEMPTS", "0", "KILN_DELIVERY_ATTEMPTS must be an integer from 1"),
    ("KILN_PRICE_NSFW_CHECK", "-1", "KILN_PRICE_NSFW_CHECK must be a number from 0"),
])
def test_each_setting_is_checked_with_its_name_and_range(variable, value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({variable: value})


def test_kiln_serve_refuses_a_bad_setting_before_starting(tmp_path):
    result = kiln(tmp_path, "serve", KILN_MAX_QUEUED_TASKS="lots")
    assert result.returncode == 2
    assert result.stderr.startswith("kiln: KILN_MAX_QUEUED_TASKS must be an integer")
