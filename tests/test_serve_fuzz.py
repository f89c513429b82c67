"""Random and malformed requests at every route of the OpenAPI schema (in-process, fake Ray jobs, bounded
examples): never a 5xx, every error in the `{"detail": [{loc, msg}]}` shape, and nothing recorded for a request
that was refused."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastapi.testclient import TestClient  # noqa: E402

from serve.app import create_app  # noqa: E402
from test_serve import ALICE, SMALL, FakeJobs, fake_config  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=40), st.sampled_from(["", "t2v", "http://127.1/a.zip", "https://a.public/x.zip",
                                                           "s3://b/k", "file:///etc/passwd", "0x7f000001", "16:9",
                                                           "low", "\x00", "\ud800"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)
FIELDS = ["training_data_url", "trigger_phrase", "rank", "number_of_steps", "learning_rate", "number_of_frames",
          "resolution", "aspect_ratio", "validation", "validation_negative_prompt", "debug_dataset", "training_mode",
          "reference_downscale_factor", "prompt", "request_id", "lora_url", "width", "image_url"]
# near-valid bodies: a working request with some fields replaced by anything
mutated = st.builds(lambda base, changes: {**base, **changes},
                    st.just({"training_data_url": "https://a.public/x.zip", **SMALL}),
                    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3))
raw_bodies = st.one_of(st.binary(max_size=200), st.sampled_from([b"[" * 5000, b'{"a":' * 40 + b"1" + b"}" * 40,
                                                                 b"NaN", b'{"rank": 1e999}', b"\xef\xbb\xbf{}"]))
bodies = st.one_of(json_values.map(lambda v: ("json", v)), mutated.map(lambda v: ("json", v)),
                   raw_bodies.map(lambda b: ("raw", b)))
segment = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#%"),
                            min_size=1, max_size=20), st.sampled_from(["t2v", "ic-lora/v2v", "requests", "..", "x"]))


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    from ltxtrain.intake import url_policy

    real = url_policy.resolve
    url_policy.resolve = lambda host, port: ([ipaddress.ip_address("93.184.216.34")] if host.endswith(".public")
                                             else (_ for _ in ()).throw(OSError("no such host")))
    cfg = fake_config(tmp_path_factory.mktemp("fuzz"), allow_private_urls=False, max_body_bytes=64 * 1024)
    try:
        with TestClient(create_app(cfg), raise_server_exceptions=False) as c:
            c.app.state.runner._client = FakeJobs()
            job = c.post("/t2v", json={"training_data_url": "https://a.public/x.zip", **SMALL}, headers=ALICE)
            assert job.status_code == 202, job.text
            c.known_id = job.json()["request_id"]
            yield c
    finally:
        url_policy.resolve = real


def _routes(client) -> list[tuple[str, str]]:
    spec = client.app.openapi()
    return sorted((path, method) for path, ops in spec["paths"].items() for method in ops)


def _check(client, method: str, url: str, body, params=None, headers=ALICE):
    store = client.app.state.store
    before = store.count()
    kind, value = body
    content = json.dumps(value).encode() if kind == "json" else value  # ASCII escapes: lone surrogates travel
    r = client.request(method, url, params=params, headers={**headers, "Content-Type": "application/json"},
                       content=content)
    assert r.status_code < 500, (method, url, body, r.status_code, r.text[:500])
    if r.headers.get("content-type", "").startswith("text/html"):  # the page's key form ("x/.." reaches "/")
        assert r.request.url.path == "/" and r.status_code in (200, 401), (url, r.status_code)
    elif r.status_code >= 400:
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail, r.text
        assert all(isinstance(d["loc"], list) and isinstance(d["msg"], str) and d["msg"] for d in detail), r.text
        assert store.count() == before, (method, url, body, r.text)  # refused: nothing recorded
    return r


def test_the_schema_lists_every_route(app_client):
    routes = _routes(app_client)
    assert ("/t2v", "post") in routes and ("/{owner}/{alias}/{endpoint}", "post") in routes
    assert len(routes) >= 14


@FUZZ
@given(data=st.data())
def test_random_requests_at_every_route_never_fail_with_5xx(app_client, data):
    path, method = data.draw(st.sampled_from(_routes(app_client)), label="route")
    params = {}
    for name in re.findall(r"{(\w+)}", path):
        value = data.draw(st.one_of(segment, st.just(app_client.known_id)) if name == "request_id" else segment,
                          label=name)
        params[name] = value
    url = re.sub(r"{(\w+)}", lambda m: urllib.parse.quote(params[m.group(1)], safe="/"), path)
    query = data.draw(st.dictionaries(st.sampled_from(["logs", "limit", "offset", "fal_webhook", "x"]),
                                      st.text(max_size=30), max_size=2), label="query")
    headers = data.draw(st.sampled_from([ALICE, {}, {"Authorization": "Key nope"}, {"Authorization": "Bearer x"}]),
                        label="headers")
    _check(app_client, method, url, data.draw(bodies, label="body"), query, headers)


@FUZZ
@given(endpoint=st.sampled_from(["t2v", "ic-lora/v2v", "ic-lora/v2v-masked", "av2av-masked", "app/alias/t2v"]),
       body=bodies)
def test_malformed_submissions_are_422_and_record_nothing(app_client, endpoint, body):
    r = _check(app_client, "post", f"/{endpoint}", body)
    assert r.status_code in (202, 413, 422), r.text
    if r.status_code == 202:  # only a request every check accepted is recorded
        assert json.loads(json.dumps(r.json()))["status"] == "IN_QUEUE"
