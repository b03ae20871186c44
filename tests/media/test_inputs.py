"""`resolve_image_input`: every accepted form of an image input, and every refusal."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import numpy as np
import pytest
from PIL import Image

from kiln.errors import InvalidRequestError, KilnError, PayloadTooLargeError
from kiln.media.inputs import MAX_INPUT_BYTES, resolve_image_input
from tests.images import b64, data_uri, encode, gradient, pixels, serving


def resolve(services, value, parameter="seedImage", owner="owner-a"):
    return asyncio.run(resolve_image_input(services, value, parameter=parameter, owner=owner))


def refusal(services, value, parameter="seedImage", owner="owner-a") -> KilnError:
    with pytest.raises(KilnError) as caught:
        resolve(services, value, parameter, owner)
    assert caught.value.parameter == parameter
    return caught.value


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_data_uri_and_bare_base64_decode_to_the_same_pixels(services, fmt):
    image = gradient(96, 64)
    for value in (data_uri(image, fmt), b64(image, fmt)):
        resolved = resolve(services, value)
        assert resolved.image.size == (96, 64)
        assert resolved.image_uuid is None
        if fmt == "PNG":
            assert np.array_equal(pixels(resolved.image), pixels(image))


def test_jpeg_is_decoded_and_turned_upright_by_its_exif_orientation(services):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    resolved = resolve(services, b64_bytes(encode(gradient(96, 64), "JPEG", exif=exif)))
    assert resolved.format == "JPEG"
    assert resolved.image.size == (64, 96)


def test_url_is_fetched(services):
    with serving({"/seed.png": encode(gradient(64, 64))}) as base:
        resolved = resolve(services, f"{base}/seed.png")
    assert np.array_equal(pixels(resolved.image), pixels(gradient(64, 64)))


def test_stored_uuid_resolves_for_its_owner_only_and_unknown_is_answered_the_same(services):
    stored = services.images.put(encode(gradient(64, 64)), owner="owner-a", extension="png",
                                 width=64, height=64, origin="uploaded")
    resolved = resolve(services, stored.image_uuid.upper(), owner="owner-a")
    assert resolved.image_uuid == stored.image_uuid
    assert np.array_equal(pixels(resolved.image), pixels(gradient(64, 64)))
    other = refusal(services, stored.image_uuid, owner="owner-b")
    unknown = refusal(services, "0f2c4a1e-8b7d-4c3e-9a6f-1d2e3f4a5b6c", owner="owner-b")
    assert (other.code, type(other)) == (unknown.code, type(unknown)) == ("invalidSeedImage", InvalidRequestError)
    assert other.message.replace(stored.image_uuid, "X") == unknown.message.replace(
        "0f2c4a1e-8b7d-4c3e-9a6f-1d2e3f4a5b6c", "X")


def b64_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(("value", "parameter", "words"), [
    (b64_bytes(b"definitely not an image" * 10), "seedImage", "could not be decoded"),
    ("not base64 at all!", "maskImage", "neither"),
    ("data:image/png,rawbytes", "guideImage", "not base64"),
    (b64_bytes(encode(gradient(16, 16), "GIF")), "inputImage", "GIF"),
    (12345, "seedImage", "must be"),
    ("", "seedImage", "must be"),
])
def test_bad_inputs_are_typed_errors_naming_the_parameter(services, value, parameter, words):
    error = refusal(services, value, parameter)
    assert error.code == "invalid" + parameter[0].upper() + parameter[1:]
    assert words in error.message


def test_decompression_bomb_is_refused(services):
    bomb = encode(Image.new("L", (5000, 5000)))  # 25 Mpx in a few tens of kB
    assert len(bomb) < 1024 * 1024
    error = refusal(services, b64_bytes(bomb))
    assert error.code == "invalidSeedImage"
    assert "pixels" in error.message


def test_body_over_20_mb_is_refused_before_decoding(services):
    error = refusal(services, b64_bytes(b"\x89PNG" + bytes(MAX_INPUT_BYTES)))
    assert isinstance(error, PayloadTooLargeError)
    assert error.code == "invalidSeedImage"


def test_url_body_over_20_mb_is_refused_while_streaming(services):
    with serving({"/big.png": b"\x89PNG" + bytes(MAX_INPUT_BYTES)}) as base:
        error = refusal(services, f"{base}/big.png")
    assert isinstance(error, PayloadTooLargeError)


def test_loopback_url_is_refused_when_private_urls_are_not_allowed(services):
    guarded = dataclasses.replace(
        services, settings=dataclasses.replace(services.settings, allow_private_urls=False)
    )
    with serving({"/seed.png": encode(gradient(64, 64))}) as base:
        assert resolve(services, f"{base}/seed.png").image.size == (64, 64)
        error = refusal(guarded, f"{base}/seed.png")
    assert error.code == "invalidSeedImage"
    assert "private" in error.message
