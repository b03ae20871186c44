"""Keys, their usage and webhook secrets, as every front of one database sees them."""

from __future__ import annotations

import pytest

from kiln.storage import KeyRepository, StoredKey, StoredUsage


def test_keys_are_stored_and_listed_oldest_first(db):
    keys = KeyRepository(db)
    assert not keys.any_exists() and keys.all() == []
    keys.add("b", "second", 2.0)
    keys.add("a", "first", 1.0)
    assert keys.any_exists() and keys.exists("a") and not keys.exists("c")
    assert keys.all() == [StoredKey("a", "first", 1.0), StoredKey("b", "second", 2.0)]


def test_the_webhook_secret_stored_first_is_the_one_of_every_front(db, second_db):
    assert KeyRepository(db).webhook_secret("kid", "whsec_first", 1.0) == "whsec_first"
    assert KeyRepository(second_db).webhook_secret("kid", "whsec_other", 2.0) == "whsec_first"
    assert KeyRepository(db).webhook_secret("other", "whsec_own", 3.0) == "whsec_own"


def test_usage_adds_up_across_fronts_and_names_stored_keys(db, second_db):
    KeyRepository(db).add("named", "a name", 1.0)
    for handle in (db, second_db, db):
        KeyRepository(handle).add_usage("named", images=2, cost=0.25)
    KeyRepository(second_db).add_usage("configured", images=1, cost=1.0)
    usage = KeyRepository(db).usage()
    assert usage[0] == StoredUsage("configured", None, 1, 1.0)
    assert (usage[1].key_id, usage[1].name, usage[1].images) == ("named", "a name", 6)
    assert usage[1].cost == pytest.approx(0.75)
