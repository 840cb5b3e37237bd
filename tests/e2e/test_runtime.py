"""One binary, three ways to run: every function in Knative mode (HTTP on $PORT, CloudEvents from the
CloudEvents SDK) and in Lambda mode (driven through the Lambda Runtime API on loopback)."""

import copy
import json
import time
import uuid

import pytest
import requests
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from conftest import EVENT_FUNCTIONS, FUNCTIONS, HTTP_FUNCTIONS, event_json


def cloud_event(kind: str, data, content_type="application/json") -> CloudEvent:
    attributes = {"type": kind, "source": "/e2e", "id": str(uuid.uuid4()), "specversion": "1.0"}
    if content_type:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data)


def post_event(url: str, message) -> requests.Response:
    return requests.post(f"{url}/", headers=dict(message.headers), data=message.body, timeout=10)


def transcode_job() -> dict:
    # A job for a video that does not exist: handled by dropping it.
    return {"videoId": uuid.uuid4().hex, "job": "video-0"}


def sqs_record(body: str) -> dict:
    record = copy.deepcopy(event_json("sqs-message.json"))
    record["messageId"] = str(uuid.uuid4())
    record["body"] = body
    return record


@pytest.mark.parametrize("name", FUNCTIONS)
def test_knative_mode_answers_healthz_and_drains_on_sigterm(knative, name):
    url, process = knative(name)
    answer = requests.get(f"{url}/healthz", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "function": name, "version": "0.1.0"}
    assert answer.headers["x-request-id"]
    metrics = requests.get(f"{url}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert 'streamgate_http_requests_total{function="%s",route="/healthz"' % name in metrics.text
    assert process.terminate() == 0


@pytest.mark.parametrize("mode", [to_binary_event, to_structured_event])
def test_cloudevents_for_a_queue_function(knative, mode):
    url, process = knative("transcode")
    assert post_event(url, mode(cloud_event("dev.streamgate.queue.message", transcode_job()))).status_code == 202

    malformed = post_event(url, mode(cloud_event("dev.streamgate.queue.message", {"videoId": "../../etc"})))
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    assert malformed.json()["code"] == "malformed_event"

    # The process lives on and takes the next event.
    assert post_event(url, mode(cloud_event("dev.streamgate.queue.message", transcode_job()))).status_code == 202
    assert process.alive()


def test_cloudevents_relayed_from_sqs_and_storage_and_schedules(knative):
    url, _ = knative("transcode")
    sqs_message = {"MessageId": str(uuid.uuid4()), "Body": json.dumps(transcode_job())}
    assert post_event(url, to_binary_event(cloud_event("aws.sqs.message", sqs_message))).status_code == 202

    url, _ = knative("on-upload")
    notification = event_json("s3-object-created.json")
    assert post_event(url, to_structured_event(cloud_event("com.amazonaws.s3.ObjectCreated", notification))).status_code == 202
    simple = {"bucket": "streamgate-sources", "key": "sources/" + uuid.uuid4().hex}
    assert post_event(url, to_binary_event(cloud_event("dev.streamgate.storage.object.created", simple))).status_code == 202
    garbage = post_event(url, to_binary_event(cloud_event("dev.streamgate.storage.object.created", {"hello": 1})))
    assert garbage.status_code == 400

    url, _ = knative("gas-monitor")
    ping = cloud_event("dev.knative.sources.ping", None, content_type=None)
    assert post_event(url, to_binary_event(ping)).status_code == 202


def test_not_a_cloudevent_is_refused(knative):
    url, process = knative("finalize")
    answer = requests.post(f"{url}/", data=b"\x00\xffnot an event", timeout=5)
    assert answer.status_code == 400
    assert answer.json()["code"] == "malformed_event"
    oversized = requests.post(f"{url}/", data=b"x" * (600 * 1024), headers={"ce-specversion": "1.0"}, timeout=5)
    assert oversized.status_code == 413
    assert process.alive()


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_lambda_mode_http_functions_answer_function_url_events(lambda_function, name):
    api, process = lambda_function(name)
    kind, response = api.invoke(event_json("function-url-healthz.json"))
    assert kind == "response", response
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok", "function": name, "version": "0.1.0"}

    unknown = copy.deepcopy(event_json("function-url-healthz.json"))
    unknown["rawPath"] = unknown["requestContext"]["http"]["path"] = "/v1/nothing-here"
    kind, response = api.invoke(unknown)
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["code"] == "not_found"
    assert process.alive()


def test_lambda_sqs_batch_refuses_only_the_malformed_message(lambda_function):
    api, process = lambda_function("transcode")
    good, bad, also_good = sqs_record(json.dumps(transcode_job())), sqs_record("{not json"), sqs_record(json.dumps(transcode_job()))
    kind, response = api.invoke({"Records": [good, bad, also_good]})
    assert kind == "response", response
    assert response == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}

    # The process lives on: the next batch is answered, all of it handled.
    kind, response = api.invoke({"Records": [sqs_record(json.dumps(transcode_job()))]})
    assert (kind, response) == ("response", {"batchItemFailures": []})
    assert process.alive()

    # Metrics leave as CloudWatch Embedded Metric Format lines on stdout.
    deadline = time.monotonic() + 5
    while not any('"_aws"' in line for line in process.stdout_lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    emf = [json.loads(line) for line in process.stdout_lines if '"_aws"' in line]
    assert emf, "no EMF line"
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "StreamGate"
    assert any("streamgate_event_failures_total" in doc for doc in emf)


def test_lambda_storage_function_takes_s3_directly_and_through_sqs(lambda_function):
    api, process = lambda_function("on-upload")
    kind, response = api.invoke(event_json("s3-object-created.json"))
    assert kind == "response", response

    wrapped = sqs_record(json.dumps(event_json("s3-object-created.json")))
    test_event = sqs_record(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "streamgate-sources"}))
    broken = sqs_record('{"Records": [{"s3": "nope"}]}')
    kind, response = api.invoke({"Records": [wrapped, test_event, broken]})
    assert (kind, response) == ("response", {"batchItemFailures": [{"itemIdentifier": broken["messageId"]}]})
    assert process.alive()


@pytest.mark.parametrize("name", ["chain-indexer", "gas-monitor", "tx-tracker"])
def test_lambda_scheduled_functions_take_eventbridge_events(lambda_function, name):
    api, process = lambda_function(name)
    kind, response = api.invoke(event_json("eventbridge-schedule.json"))
    assert kind == "response", response
    # A payload the function does not take is an invocation error, not a crash.
    kind, response = api.invoke({"Records": [sqs_record("{}")]})
    assert kind == "error"
    assert process.alive()


def test_every_event_function_is_covered():
    assert sorted(EVENT_FUNCTIONS) == sorted(
        ["on-upload", "transcode", "finalize", "dead-letters", "chain-indexer", "gas-monitor", "tx-tracker"]
    )
