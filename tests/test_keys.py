"""Per-key usage as the operator sees it: `kiln keys usage` after generating through the API."""

from __future__ import annotations

import pytest

from kiln.cli import main
from tests.conftest import inference, post


def test_keys_usage_command_shows_images_and_cost(client, services, data_dir, capsys, monkeypatch):
    if services.settings.database_url:  # the command reads the database of the server's settings
        monkeypatch.setenv("KILN_DATABASE_URL", services.settings.database_url)
    key = services.keys.create("cli-usage")
    items = post(client, [inference(numberResults=2, includeCost=True)], key=key).json()["data"]
    assert main(["--data-dir", str(data_dir), "keys", "usage"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["key", "name", "images", "cost", "(USD)"]
    (row,) = [line for line in lines if " cli-usage " in line]
    _prefix, name, images, cost = row.split()
    assert (name, int(images)) == ("cli-usage", 2)
    assert float(cost) == pytest.approx(sum(i["cost"] for i in items), abs=1e-6)
