"""Settings come from KILN_* variables; CLI flags override them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.settings import Settings


def test_environment_variables():
    settings = Settings.from_env({
        "KILN_HOST": "0.0.0.0", "KILN_PORT": "9000", "KILN_DATA_DIR": "/srv/kiln",
        "KILN_API_KEYS": "a, b,,c", "KILN_PUBLIC_URL": "https://img.example.com/",
        "KILN_ALLOW_PRIVATE_URLS": "true", "KILN_PRICE_PER_MEGAPIXEL_STEP": "0.5",
    })
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 9000, Path("/srv/kiln"))
    assert settings.api_keys == ("a", "b", "c")
    assert settings.base_url == "https://img.example.com"
    assert settings.allow_private_urls is True
    assert settings.prices.per_megapixel_step == 0.5


def test_defaults_and_flag_overrides():
    settings = Settings.from_env({}, port=8181, host=None)
    assert settings.data_dir == Path("kiln-data")
    assert settings.allow_private_urls is False
    assert settings.base_url == "http://127.0.0.1:8181"


def test_delivery_limits_and_nsfw_variables():
    settings = Settings.from_env({
        "KILN_TASK_TTL": "60", "KILN_DELIVERY_ATTEMPTS": "2", "KILN_DELIVERY_BACKOFF": "0.5",
        "KILN_DELIVERY_TIMEOUT": "3", "KILN_MAX_RESULTS_IN_FLIGHT_PER_KEY": "8",
        "KILN_MAX_QUEUED_TASKS": "16", "KILN_MAX_TASKS_PER_REQUEST": "4",
        "KILN_NSFW_CLASSES": "belly_exposed, FEET_EXPOSED", "KILN_NSFW_THRESHOLD": "0.7",
    })
    assert (settings.task_ttl_s, settings.delivery_attempts, settings.delivery_backoff_s) == (60, 2, 0.5)
    assert (settings.delivery_timeout_s, settings.max_results_in_flight_per_key) == (3, 8)
    assert (settings.max_queued_tasks, settings.max_tasks_per_request) == (16, 4)
    assert settings.nsfw_classes == ("BELLY_EXPOSED", "FEET_EXPOSED")
    assert settings.nsfw_threshold == 0.7


def test_preloaded_models_and_log_format():
    settings = Settings.from_env({"KILN_PRELOAD_MODELS": "kiln:shapes@1, civitai:1@2",
                                  "KILN_LOG_FORMAT": "JSON"})
    assert settings.preload_models == ("kiln:shapes@1", "civitai:1@2")
    assert settings.log_format == "json"
    with pytest.raises(ValueError, match="KILN_LOG_FORMAT"):
        Settings.from_env({"KILN_LOG_FORMAT": "xml"})
