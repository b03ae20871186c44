"""`includeCost`: the price model through the API, its add-ons, and the usage kept per key."""

from __future__ import annotations

import pytest

from kiln.keys import key_id
from tests.conftest import inference, post


def cost_of(client, **fields):
    (item,) = post(client, [inference(includeCost=True, **fields)]).json()["data"]
    return item["cost"]


def test_cost_follows_megapixel_steps(client, settings):
    prices = settings.prices
    base = cost_of(client)
    assert base == pytest.approx(prices.per_megapixel_step * 128 * 128 / 1e6 * 2)
    assert cost_of(client, steps=4) == pytest.approx(2 * base)
    assert cost_of(client, width=256) == pytest.approx(2 * base)
    assert cost_of(client, seed=99) == base  # the same request always costs the same


def test_add_ons_for_the_nsfw_check_and_prompt_weighting(client, settings):
    prices = settings.prices
    base = cost_of(client)
    assert cost_of(client, checkNSFW=True) == pytest.approx(base + prices.nsfw_check)
    assert cost_of(client, promptWeighting="compel") == pytest.approx(base + prices.prompt_weighting)
    assert cost_of(client, usePromptWeighting=True, safety={"mode": "fast"}) == pytest.approx(
        base + prices.prompt_weighting + prices.nsfw_check)


def test_no_cost_field_unless_asked(client):
    (item,) = post(client, [inference()]).json()["data"]
    assert "cost" not in item


def test_usage_is_recorded_per_key(client, services):
    key = services.keys.create("usage-probe")
    before = {u.key_id: u for u in services.keys.usage()}.get(key_id(key))
    assert before is None
    items = post(client, [inference(numberResults=3, includeCost=True)], key=key).json()["data"]
    (usage,) = [u for u in services.keys.usage() if u.key_id == key_id(key)]
    assert (usage.name, usage.images) == ("usage-probe", 3)
    assert usage.cost == pytest.approx(sum(i["cost"] for i in items))
