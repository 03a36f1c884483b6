"""The client against the real fake server over HTTP: auth, typed errors, every retryable fault.

Backoff sleeps are recorded, not slept (``sleep`` fixture), so these run fast and
the delays the client chose can be asserted.
"""

from __future__ import annotations

import logging
import socket

import pytest

from thresher.jobs.tmdb.client import (
    AuthError, Credentials, NotFound, RequestRejected, RetriesExhausted, Unprocessable,
)
from thresher.demo.fakes.tmdb_server import FaultRule
from thresher.jobs.tmdb.ratelimit import RateLimiter

from .support import API_KEY, TOKEN

POPULAR = "movie/popular"


def test_list_page_with_api_key_and_with_bearer_token(make_client, server):
    page = make_client().get(POPULAR, {"page": 2}, expect=("results",))
    assert page["page"] == 2 and len(page["results"]) == 20
    by_token = make_client(Credentials(bearer_token=TOKEN)).get(POPULAR, {"page": 2})
    assert by_token["results"] == page["results"]


def test_v4_tokens_are_recognized_in_the_api_key_variable():
    assert Credentials.from_value("eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.sig").bearer_token
    assert Credentials.from_value("0123456789abcdef0123456789abcdef").api_key


def test_wrong_key_is_an_auth_error_after_exactly_one_request(make_client, server):
    client = make_client(Credentials(api_key="wrong-key-123"))
    with pytest.raises(AuthError, match="401"):
        client.get(POPULAR, {"page": 1})
    assert server.stats()["requests"] == 1 and client.stats.retries == 0


def test_typed_errors_are_not_retried(make_client, server):
    client = make_client()
    with pytest.raises(NotFound):
        client.get("movie/999999999")
    with pytest.raises(Unprocessable):
        client.get("movie/changes", {"start_date": "2025-01-01", "end_date": "2025-02-01"})
    with pytest.raises(RequestRejected, match="HTTP 400"):
        client.get(POPULAR, {"page": 501})
    assert server.stats()["requests"] == 3 and client.stats.retries == 0


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "429", "malformed", "truncated", "reset", "timeout",
                                  "html"])
def test_each_retryable_fault_is_retried_until_success(make_client, server, sleep, kind):
    server.fake.set_faults(schedule=[FaultRule(kind, f"{POPULAR}?page=3", times=2)])
    client = make_client(timeout=0.3)
    page = client.get(POPULAR, {"page": 3}, expect=("results",))
    assert page["page"] == 3 and len(page["results"]) == 20
    assert server.stats()["faults"] == {kind: 2}
    assert client.stats.retries == 2 and len(sleep.calls) == 2


def test_malformed_variants_are_retried_and_an_html_body_is_named_as_such(make_client, server):
    server.fake.set_faults(schedule=[FaultRule("malformed", POPULAR, times=3)])
    client = make_client()
    client.get(POPULAR, {"page": 1}, expect=("results",))
    # broken JSON, JSON without results, and an HTML page sent as application/json
    assert client.stats.failures["malformed"] == 2 and client.stats.failures["not_json"] == 1


def test_an_html_answer_is_called_an_html_page_with_its_content_type(make_client, server):
    """Bug (issue 15): an HTML 200 body on every path ended as "malformed after 6 attempts: invalid
    JSON (100 bytes)", which says nothing about what came back."""
    server.fake.set_faults(schedule=[FaultRule("html", POPULAR, times=None)])
    with pytest.raises(RetriesExhausted) as err:
        make_client(max_retries=2).get(POPULAR, {"page": 1}, expect=("results",))
    text = str(err.value)
    assert "an HTML page (text/html" in text and "instead of JSON" in text and "Sign in to the network" in text
    assert "gave up after 3 attempts (2 retries)" in text


def test_messages_say_whether_a_request_was_retried(make_client, server):
    """Bug (issue 15): with --max-retries 0 a failure still read "after retries", and 404s were reported
    "failed after retries" though never retried."""
    server.fake.set_faults(schedule=[FaultRule("429", POPULAR, times=None)])
    client = make_client(max_retries=0)
    with pytest.raises(RetriesExhausted, match=r"HTTP 429 .*not retried \(maxRetries is 0\)"):
        client.get(POPULAR, {"page": 1})
    assert client.stats.as_dict()["gaveUp"] == {"http_429": 1} and client.stats.as_dict()["retried"] == {}
    with pytest.raises(NotFound, match=r"HTTP 404 .*not retried \(404: no such resource\)"):
        client.get("movie/999999999")


def test_retry_after_is_honoured_and_slows_the_shared_limiter(make_client, server, sleep):
    server.config.retry_after = "2"
    server.fake.set_faults(schedule=[FaultRule("429-retry-after", POPULAR, times=1)])
    limiter = RateLimiter(30.0, burst=50, sleep=lambda s: None)
    client = make_client(limiter=limiter)
    client.get(POPULAR, {"page": 1})
    assert sleep.calls == [2.0]
    assert limiter.slowdowns == 1 and limiter.rate < 30.0
    assert client.stats.throttled == 1


def test_429_without_retry_after_uses_our_own_jittered_backoff(make_client, server, sleep):
    server.fake.set_faults(schedule=[FaultRule("429", POPULAR, times=3)])
    client = make_client()
    client.get(POPULAR, {"page": 1})
    base = client.policy.base_delay
    assert [d <= base * 2**i for i, d in enumerate(sleep.calls)] == [True, True, True]
    assert client.limiter.slowdowns == 3


def test_retries_are_bounded_and_the_error_says_why(make_client, server):
    server.fake.set_faults(schedule=[FaultRule("503", POPULAR, times=None)])
    client = make_client(max_retries=3)
    with pytest.raises(RetriesExhausted, match=r"HTTP 503 .*gave up after 4 attempts \(3 retries\)"):
        client.get(POPULAR, {"page": 1})
    assert server.stats()["requests"] == 4


def test_the_api_key_never_appears_in_errors_or_logs(make_client, server, caplog):
    with socket.socket() as probe:  # a port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/3"
    client = make_client(base_url=dead, max_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(RetriesExhausted) as err:
        client.get(POPULAR, {"page": 1})
    assert "connection" in str(err.value)
    assert API_KEY not in str(err.value)
    server.fake.set_faults(schedule=[FaultRule("503", POPULAR, times=None)])
    with pytest.raises(RetriesExhausted) as err:
        make_client(max_retries=0).get(POPULAR, {"page": 1})
    assert API_KEY not in str(err.value) and "api_key" not in str(err.value)
    from thresher.logs import JsonFormatter

    formatted = [JsonFormatter().format(r) for r in caplog.records]
    assert formatted and not any(API_KEY in line for line in formatted)


def test_session_pool_is_sized_to_the_workers(make_client):
    client = make_client(workers=13)
    assert client.session.get_adapter("http://x")._pool_maxsize == 13
