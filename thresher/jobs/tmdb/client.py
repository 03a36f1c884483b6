"""A TMDB API v3 client: one pooled session, a shared rate limiter, retries, typed errors.

The credential is a v3 API key (``api_key`` query parameter) or a v4 read
access token (``Authorization: Bearer``). It is registered for log redaction
and scrubbed from every error message this module raises, because requests
and urllib3 put the full URL (query string included) into theirs.

Retried: 429, 5xx, timeouts, connection errors, truncated bodies, and
responses that are not the JSON object we expected. Not retried: 401
(``AuthError``: a wrong key stays wrong), 404 (``NotFound``), 422
(``Unprocessable``) and other 4xx (``RequestRejected``). A request made with
``fail_fast=True`` (the run's preflight) is not retried either when the server
cannot be reached at all (connection refused, DNS, TLS, connect timeout) or
answers something that is not JSON (an HTML page): ``Unreachable``.

Every message says what happened: how many attempts were made, or that the
request was not retried and why; an HTML answer is called one, with its
content type.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from thresher.api.tmdb import DEFAULT_REQUESTS_PER_SECOND
from thresher.jobs.harness import redact, register_secret
from thresher.jobs.tmdb.ratelimit import RateLimiter
from thresher.jobs.tmdb.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after, retry_delay

log = logging.getLogger("thresher.tmdb.client")

DEFAULT_BASE_URL = "https://api.themoviedb.org/3"
USER_AGENT = "thresher-tmdb/0.1 (+https://github.com/thresher)"

T = TypeVar("T")


class TmdbError(Exception):
    """Any failure of a TMDB request, after retries where they apply."""

    def __init__(self, message: str, status: int | None = None, tmdb_code: int | None = None) -> None:
        super().__init__(redact(message))
        self.status = status
        self.tmdb_code = tmdb_code


class AuthError(TmdbError):
    """401: the API key or token is missing, wrong or revoked. Never retried."""


class NotFound(TmdbError):
    """404: no such resource (a deleted movie, a wrong path)."""


class Unprocessable(TmdbError):
    """422: TMDB understood the request and refused it (a changes window over 14 days)."""


class RequestRejected(TmdbError):
    """Another 4xx (bad page number, too many appended responses): our request is wrong."""


class RetriesExhausted(TmdbError):
    """A retryable failure that kept failing: the upstream is unhealthy or throttling us."""


class Unreachable(TmdbError):
    """The preflight found no TMDB API there: refused, DNS, TLS, connect timeout, or not JSON."""


# Failures that mean "nothing usable is at this URL": on the preflight they end the run at once.
FAIL_FAST_KINDS = frozenset({"refused", "dns", "tls", "connect_timeout", "not_json"})


@dataclass(frozen=True)
class Credentials:
    """A v3 API key or a v4 bearer token (exactly one)."""

    api_key: str | None = None
    bearer_token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.api_key) == bool(self.bearer_token):
            raise ValueError("give exactly one of api_key and bearer_token")

    @classmethod
    def from_value(cls, value: str) -> Credentials:
        """Pick the kind from the value: v4 read access tokens are JWTs (``eyJ...`` with two dots)."""
        value = value.strip()
        if value.startswith("eyJ") and value.count(".") == 2:
            return cls(bearer_token=value)
        return cls(api_key=value)

    @property
    def secret(self) -> str:
        return self.api_key or self.bearer_token or ""


@dataclass
class ClientStats:
    """Counters of one client, safe to update from many threads."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0  # 429s received
    by_status: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # retryable failure kinds seen
    retried: Counter = field(default_factory=Counter)  # ... of which retried, by kind
    gave_up: Counter = field(default_factory=Counter)  # requests that failed for good, by last kind
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, attr: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, attr, getattr(self, attr) + n)

    def note(self, counter: str, key: Any) -> None:
        with self.lock:
            getattr(self, counter)[key] += 1

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "throttled": self.throttled,
                "byStatus": {str(k): v for k, v in sorted(self.by_status.items(), key=lambda kv: str(kv[0]))},
                "failures": dict(sorted(self.failures.items())),
                "retried": dict(sorted(self.retried.items())),
                "gaveUp": dict(sorted(self.gave_up.items())),
            }


class _Retryable(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(detail)
        self.kind = kind
        self.retry_after = retry_after
        self.status = status


def make_session(pool_size: int):
    """One requests Session whose connection pool fits the worker count (no 'pool is full' churn)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Retries are ours (with the shared limiter and jitter), so urllib3's own are off.
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(1, pool_size), max_retries=0, pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    return session


class TmdbClient:
    """GET TMDB resources as JSON objects, sharing one session and one rate limiter across threads."""

    def __init__(
        self,
        credentials: Credentials,
        base_url: str = DEFAULT_BASE_URL,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        session=None,
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        language: str | None = None,
    ) -> None:
        self.credentials = credentials
        register_secret(credentials.secret)
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter or RateLimiter(DEFAULT_REQUESTS_PER_SECOND, burst=2)
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.session = session if session is not None else make_session(pool_size)
        if credentials.bearer_token:
            self.session.headers["Authorization"] = f"Bearer {credentials.bearer_token}"
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.language = language
        self.stats = ClientStats()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TmdbClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the one request method -------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None, expect: tuple[str, ...] = (),
            fail_fast: bool = False) -> dict:
        """GET ``path`` (relative to the base URL) and return its JSON object.

        ``expect`` names keys the object must have (``results`` for list pages);
        a body without them counts as malformed and is retried. ``fail_fast``:
        raise ``Unreachable`` at the first failure of a ``FAIL_FAST_KINDS`` kind.
        """
        query = dict(params or {})
        if self.language and "language" not in query:
            query["language"] = self.language
        if self.credentials.api_key:
            query["api_key"] = self.credentials.api_key
        url = f"{self.base_url}/{path.lstrip('/')}"
        return self._with_retries(f"GET /{path.lstrip('/')}", lambda: self._attempt(url, query, expect),
                                  fail_fast_url=url if fail_fast else None)

    @contextmanager
    def stream(self, url: str) -> Iterator:
        """GET an absolute URL that is not part of the API (the daily ID export) and yield the
        response unread, for ``iter_content``; closed on exit.

        The same limiter, retries and typed errors as ``get`` apply to getting the response; a
        failure while reading its body is the caller's to handle. No credential is sent: the
        export host is public, and the key must not travel to another host.
        """
        response = self._with_retries(f"GET {url}", lambda: self._attempt_stream(url))
        try:
            yield response
        finally:
            response.close()

    def _with_retries(self, what: str, attempt_once: Callable[[], T], fail_fast_url: str | None = None) -> T:
        attempt = 0
        while True:
            try:
                return attempt_once()
            except _Retryable as failure:
                self.stats.note("failures", failure.kind)
                if fail_fast_url is not None and failure.kind in FAIL_FAST_KINDS:
                    self.stats.note("gave_up", failure.kind)
                    raise Unreachable(f"{fail_fast_url}: {failure}", status=failure.status) from None
                if attempt >= self.policy.max_retries:
                    self.stats.note("gave_up", failure.kind)
                    raise RetriesExhausted(f"{what}: {failure}; {_attempts_note(attempt + 1, self.policy)}",
                                           status=failure.status) from None
                self.stats.note("retried", failure.kind)
                with self._rng_lock:
                    delay = retry_delay(attempt, self.policy, self._rng, failure.retry_after)
                log.debug("retrying", extra={"what": what, "kind": failure.kind, "attempt": attempt + 1,
                                             "delaySeconds": round(delay, 3)})
                self.stats.count("retries")
                attempt += 1
                if delay > 0:
                    self._sleep(delay)

    def _send(self, url: str, **kwargs):
        """One rate-limited GET; transport failures become retryable ones. Returns (response, ticket)."""
        import requests

        ticket = self.limiter.acquire()
        self.stats.count("requests")
        try:
            response = self.session.get(url, timeout=self.timeout, **kwargs)
            if not kwargs.get("stream"):
                _ = response.content  # reads the whole body: a truncated one raises here
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as err:
            kind, detail = transport_failure(err, self.timeout)
            raise _Retryable(kind, detail) from None
        self.stats.note("by_status", response.status_code)
        return response, ticket

    def _attempt_stream(self, url: str):
        # Authorization None drops the session's bearer header for this request.
        response, ticket = self._send(url, stream=True, headers={"Authorization": None, "Accept": "*/*"})
        if response.status_code == 200:
            self.limiter.on_success(ticket.sent_at)
            return response
        try:
            body = response.content
        except Exception:  # noqa: BLE001 - an error body cut short still leaves the status to act on
            body = b""
        finally:
            response.close()
        self._raise_for_status(response, body, url, ticket)

    def _attempt(self, url: str, query: dict, expect: tuple[str, ...]) -> dict:
        response, ticket = self._send(url, params=query)
        body = response.content
        if response.status_code == 200:
            content_type = response.headers.get("Content-Type", "")
            if not _looks_like_json(content_type, body):
                raise _Retryable("not_json", f"HTTP 200 with {describe_body(content_type, body)} instead of JSON")
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as err:
                raise _Retryable("malformed", f"invalid JSON ({describe_body(content_type, body)}): {err}") from None
            if not isinstance(data, dict) or any(key not in data for key in expect):
                raise _Retryable("malformed", f"JSON without {', '.join(expect) or 'an object'}")
            self.limiter.on_success(ticket.sent_at)
            return data
        self._raise_for_status(response, body, url, ticket)

    def _raise_for_status(self, response, body: bytes, url: str, ticket) -> NoReturn:
        """Turn a non-200 answer into a retryable failure or a typed error."""
        status = response.status_code
        code, message = _tmdb_status(body)
        if code is not None:
            detail = f"HTTP {status} (TMDB {code}: {message})"
        else:
            detail = f"HTTP {status} ({describe_body(response.headers.get('Content-Type', ''), body)})"
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429:
                self.stats.count("throttled")
                pause = None if retry_after is None else min(retry_after, self.policy.max_retry_after)
                self.limiter.on_throttled(pause, ticket.sent_at)
            # The retry loop names the request: `what` in _with_retries.
            raise _Retryable(f"http_{status}", detail, retry_after=retry_after, status=status)
        detail = f"GET {response.request.path_url.split('?')[0] if response.request else url}: {detail}"
        if status == 401:
            raise AuthError(detail + " - the TMDB API key or token was rejected; not retried", status, code)
        if status == 404:
            raise NotFound(detail + "; not retried (404: no such resource)", status, code)
        if status == 422:
            raise Unprocessable(detail + "; not retried (422: TMDB refused the request)", status, code)
        raise RequestRejected(detail + f"; not retried ({status}: the request itself is wrong)", status, code)


def _attempts_note(attempts: int, policy: RetryPolicy) -> str:
    if policy.max_retries == 0:
        return "not retried (maxRetries is 0)"
    return f"gave up after {attempts} attempts ({attempts - 1} retries)"


def _looks_like_json(content_type: str, body: bytes) -> bool:
    """False for an answer that is plainly something else: an HTML page, or a non-JSON content type."""
    head = body[:64].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return False
    kind = content_type.split(";")[0].strip().lower()
    return not kind or kind == "application/json" or kind.endswith("+json") or kind == "text/json"


def describe_body(content_type: str, body: bytes) -> str:
    """What came back, in words: 'an HTML page (text/html, 412 bytes): "<html>..."'."""
    kind = content_type.split(";")[0].strip().lower() or "no content type"
    head = body[:64].lstrip().lower()
    what = "an HTML page" if "html" in kind or head.startswith((b"<!doctype", b"<html")) else "a body"
    snippet = " ".join(body[:60].decode("utf-8", "replace").split())
    more = "..." if len(body) > 60 else ""
    return f"{what} ({kind}, {len(body)} bytes)" + (f': "{snippet}{more}"' if snippet else "")


def transport_failure(err: BaseException, timeout: float) -> tuple[str, str]:
    """(kind, one-line description) of a failure below HTTP: refused, dns, tls, connect_timeout,
    timeout, truncated or connection. Pure: it only reads the exception chain."""
    import requests

    text = redact(str(err))
    chain = []
    cause: BaseException | None = err
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args and
                                                          isinstance(cause.args[0], BaseException) else None)
    names = " ".join(type(c).__name__ for c in chain) + " " + text
    if isinstance(err, requests.exceptions.SSLError) or "SSLError" in names or "CERTIFICATE_VERIFY" in names:
        return "tls", f"TLS handshake failed: {_reason(text)}"
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "connect_timeout", f"no connection within {timeout:g} s (host unreachable or filtered)"
    if isinstance(err, requests.Timeout):
        return "timeout", f"no answer within {timeout:g} s: {_reason(text)}"
    if isinstance(err, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        # A body cut short surfaces as ChunkedEncodingError (urllib3 IncompleteRead/ProtocolError).
        return "truncated", f"the answer was cut short: {_reason(text)}"
    if any(s in names for s in ("NameResolutionError", "Name or service not known", "Failed to resolve",
                                "Temporary failure in name resolution", "nodename nor servname",
                                "No address associated")):
        return "dns", f"DNS lookup failed: {_reason(text)}"
    if "Connection refused" in names or "Errno 111" in names or "ConnectionRefusedError" in names:
        return "refused", "connection refused (nothing listens on that port)"
    return "connection", f"connection failed: {_reason(text)}"


def _reason(text: str) -> str:
    """The informative tail of a requests/urllib3 message, without the URL noise, on one line."""
    text = " ".join(text.split())
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1].rstrip(")")
    return text[:200]


def _tmdb_status(body: bytes) -> tuple[int | None, str | None]:
    """TMDB's error envelope ``{status_code, status_message}``, when the body is one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if isinstance(data, dict) and "status_code" in data:
        return data.get("status_code"), str(data.get("status_message", ""))[:200]
    return None, None
