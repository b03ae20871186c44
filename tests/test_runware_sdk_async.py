"""The official `runware` Python SDK with `deliveryMethod="async"` then `getResponse`, and the
poll it falls back to for a sync task, against Kiln on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import io

from PIL import Image
from runware import IAsyncTaskResponse, IImageInference

from tests.conftest import SD, new_uuid
from tests.test_runware_sdk import _with_client


def request(**overrides) -> IImageInference:
    fields = dict(
        model=SD, positivePrompt="a red circle on a blue background", width=128, height=128,
        steps=2, numberResults=2, seed=777, outputType="base64Data", outputFormat="PNG",
    )
    fields.update(overrides)
    return IImageInference(**fields)


def test_async_then_get_response(ws_url):
    task_uuid = new_uuid()

    async def body(rw):
        ack = await rw.imageInference(requestImage=request(deliveryMethod="async", taskUUID=task_uuid))
        await asyncio.sleep(1.5)  # let it finish: a poll answered "processing" costs the SDK 30 s
        images = await rw.getResponse(taskUUID=task_uuid, numberResults=2)
        sync = await rw.imageInference(requestImage=request(numberResults=1))
        return ack, images, sync

    ack, images, (sync,) = asyncio.run(_with_client(ws_url, body))
    assert isinstance(ack, IAsyncTaskResponse)
    assert (ack.taskType, ack.taskUUID) == ("imageInference", task_uuid)
    assert len(images) == 2
    assert sorted(i.seed for i in images) == [777, 778]
    assert all(i.imageUUID and i.status == "success" and i.taskType == "imageInference" for i in images)
    first = next(i for i in images if i.seed == 777)
    assert Image.open(io.BytesIO(base64.b64decode(first.imageBase64Data))).size == (128, 128)
    assert first.imageBase64Data == sync.imageBase64Data  # same seed, same pixels as sync


def test_get_response_of_a_sync_task(ws_url):
    task_uuid = new_uuid()

    async def body(rw):
        sent = await rw.imageInference(requestImage=request(taskUUID=task_uuid, numberResults=1))
        polled = await rw.getResponse(taskUUID=task_uuid)
        return sent, polled

    (sent,), (polled,) = asyncio.run(_with_client(ws_url, body))
    assert polled.imageUUID == sent.imageUUID
    assert polled.imageBase64Data == sent.imageBase64Data
