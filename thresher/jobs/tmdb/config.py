"""Turning command-line input and the environment into a validated job, credentials and base URL.

Pure functions of their arguments (the environment is passed in), so the
precedence rules are unit-tested without touching ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from thresher.api.runnames import LOGICAL_TIME_ENV, parse_logical_time
from thresher.api.tmdb import DEFAULT_EXPORT_BASE_URL, TmdbJob
from thresher.jobs.harness import ConfigError, read_spec
from thresher.jobs.tmdb.client import DEFAULT_BASE_URL, Credentials

API_KEY_ENV = "TMDB_API_KEY"
TOKEN_ENV = "TMDB_READ_ACCESS_TOKEN"
BASE_URL_ENV = "TMDB_API_BASE_URL"
EXPORT_BASE_URL_ENV = "TMDB_EXPORT_BASE_URL"
DATA_DIR_ENV = "THRESHER_DATA_DIR"
DEFAULT_DATA_DIR = "./thresher-data"
# Without --spec (a run by hand), the secret reference only has to satisfy the model: the
# credential comes from the environment either way.
HAND_RUN_SECRET = {"name": "tmdb-api-key"}


def load_spec(text: str | None) -> dict[str, Any]:
    """The spec as a dict: inline JSON, or ``@path`` to a JSON or YAML file; {} when absent."""
    return read_spec(text)


def parse_source(text: str) -> dict[str, Any]:
    """``endpoint[:pages[:k=v&k=v]]``, e.g. ``discover:3:with_genres=28,35&vote_average.gte=7``."""
    endpoint, _, rest = text.partition(":")
    pages, _, params = rest.partition(":")
    source: dict[str, Any] = {"endpoint": endpoint}
    if pages:
        if not pages.isdigit():
            raise ConfigError(f"--source {text!r}: pages must be a number")
        source["pages"] = int(pages)
    if params:
        pairs = [p.partition("=") for p in params.split("&") if p]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"--source {text!r}: params must be k=v pairs joined by &")
        source["params"] = {k: v for k, _, v in pairs}
    return source


def build_job(spec_text: str | None, overrides: Mapping[str, Any]) -> TmdbJob:
    """The spec with command-line overrides (by camelCase name; None means not given) applied."""
    data = load_spec(spec_text)
    if not spec_text:
        data.setdefault("apiKeySecretRef", dict(HAND_RUN_SECRET))
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    if overrides.get("sources") and not overrides.get("collection"):
        data["collection"] = "custom"
    try:
        return TmdbJob.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in err.errors()[:5]
        )
        raise ConfigError(f"invalid tmdb spec: {problems}") from None


def credentials_from_env(env: Mapping[str, str]) -> Credentials:
    """The credential from TMDB_API_KEY (v3 key, or a v4 token: detected), else TMDB_READ_ACCESS_TOKEN."""
    key = (env.get(API_KEY_ENV) or "").strip()
    if key:
        return Credentials.from_value(key)
    token = (env.get(TOKEN_ENV) or "").strip()
    if token:
        return Credentials(bearer_token=token)
    raise ConfigError(f"no TMDB credential: set {API_KEY_ENV} (v3 API key) or {TOKEN_ENV} (v4 read access token); "
                      "in a cluster, apiKeySecretRef names the Secret mounted as that variable")


def logical_time_from_env(env: Mapping[str, str]) -> datetime | None:
    """THRESHER_LOGICAL_TIME, set by the operator on scheduled and backfilled runs; None when unset."""
    value = (env.get(LOGICAL_TIME_ENV) or "").strip()
    if not value:
        return None
    try:
        return parse_logical_time(value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resolve_base_url(flag: str | None, job: TmdbJob, env: Mapping[str, str]) -> str:
    """--api-base-url, else spec.apiBaseUrl, else $TMDB_API_BASE_URL, else TMDB's."""
    chosen = flag or job.api_base_url or env.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not chosen.startswith(("http://", "https://")):
        raise ConfigError(f"API base URL must be http(s)://...: {chosen!r}")
    return chosen.rstrip("/")


def resolve_export_base_url(flag: str | None, job: TmdbJob, env: Mapping[str, str]) -> str:
    """--export-base-url, else spec.exportBaseUrl, else $TMDB_EXPORT_BASE_URL, else TMDB's file host."""
    chosen = flag or job.export_base_url or env.get(EXPORT_BASE_URL_ENV) or DEFAULT_EXPORT_BASE_URL
    if not chosen.startswith(("http://", "https://")):
        raise ConfigError(f"export base URL must be http(s)://...: {chosen!r}")
    return chosen.rstrip("/")


def resolve_data_dir(flag: str | None, env: Mapping[str, str]) -> Path:
    return Path(flag or env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
