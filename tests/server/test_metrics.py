"""`GET /metrics`: Prometheus counters of replies by task type and outcome, task durations and
tasks in flight, read before and after requests (the session's app is shared, so by deltas)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import inference, new_uuid, post


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def replies(task_type: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return "kiln_replies_total", (("outcome", outcome), ("task_type", task_type))


def test_replies_durations_and_in_flight_are_counted(client):
    before = samples(client)
    assert post(client, [inference(numberResults=2)]).status_code == 200
    assert post(client, [inference(width=100)]).status_code == 400
    post(client, [{"taskType": "fooBar", "taskUUID": new_uuid()}])
    post(client, [{"taskType": "ping", "ping": True}])
    after = samples(client)

    def delta(key) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(replies("imageInference", "success")) == 2  # one per image
    assert delta(replies("imageInference", "invalidWidth")) == 1
    assert delta(replies("unknown", "unsupportedTaskType")) == 1  # client names don't become labels
    assert delta(replies("ping", "success")) == 1
    assert delta(("kiln_task_duration_seconds_count", (("task_type", "imageInference"),))) == 1
    assert delta(("kiln_task_duration_seconds_sum", (("task_type", "imageInference"),))) > 0
    assert after[("kiln_tasks_in_flight", ())] == 0
