"""The image index: one row per stored image, found by UUID, purged by age."""

from __future__ import annotations

from kiln.storage import ImageIndex


def test_images_are_indexed_found_counted_and_removed_by_age(db):
    index = ImageIndex(db)
    for number, origin in enumerate(["generated", "uploaded", "uploaded"]):
        index.add(f"uuid-{number}", owner="owner", extension="png", width=64, height=32,
                  origin=origin, created_at=float(number))
    assert index.get("uuid-1") == {"image_uuid": "uuid-1", "owner": "owner", "format": "png",
                                   "width": 64, "height": 32, "origin": "uploaded", "created_at": 1.0}
    assert index.get("unknown") is None
    assert (index.count(), index.count(origin="uploaded")) == (3, 2)
    old = index.created_before(2.0, limit=10)
    assert sorted(old) == [("uuid-0", "png"), ("uuid-1", "png")]
    assert len(index.created_before(2.0, limit=1)) == 1
    index.remove([image_uuid for image_uuid, _ in old])
    assert index.count() == 1 and index.get("uuid-0") is None
