"""The command line: spec and flag precedence, credentials, exit codes and the run-result file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from thresher.api.runresult import parse_message
from thresher.jobs.harness import ConfigError
from thresher.jobs.tmdb import config as cfg
from thresher.jobs.tmdb.cli import app

from .support import API_KEY, job


@pytest.fixture
def invoke(monkeypatch, tmp_path):
    """Run ``collect`` in-process; return (exit code, run result, output)."""
    # configure_logging replaces the root handlers, which would outlive the test's captured stderr.
    monkeypatch.setattr("thresher.jobs.harness.configure_logging", lambda *a, **k: None)
    monkeypatch.delenv("TMDB_API_KEY", raising=False)
    monkeypatch.delenv("TMDB_READ_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("THRESHER_DATA_DIR", raising=False)
    result_file = tmp_path / "result.json"

    def run(*args: str, env: dict[str, str] | None = None):
        outcome = CliRunner().invoke(app, ["collect", "--result-path", str(result_file), *args], env=env)
        parsed = parse_message(result_file.read_text()) if result_file.exists() else None
        assert parsed is not None and parsed.ok, (outcome.output, outcome.exception)
        return outcome.exit_code, parsed.result

    return run


def test_missing_credential_is_a_config_error(invoke, tmp_path):
    code, result = invoke("--data-dir", str(tmp_path / "d"))
    assert code == 2 and result.exit_code == 2 and not result.succeeded
    assert "TMDB_API_KEY" in result.error


@pytest.mark.parametrize(("spec", "message"), [
    ("{not json", "not valid JSON"), ('{"apiKeySecretRef": {"name": "t"}, "workers": 99}', "workers"),
    ('{"collection": "daily"}', "apiKeySecretRef"), ("[1]", "JSON object"), ("@/nonexistent.json", "cannot read"),
])
def test_bad_specs_are_config_errors(invoke, tmp_path, spec, message):
    code, result = invoke("--spec", spec, "--data-dir", str(tmp_path / "d"), env={"TMDB_API_KEY": API_KEY})
    assert code == 2 and message in result.error


def test_flags_run_a_collection_against_the_fake(invoke, server, tmp_path):
    code, result = invoke("--collection", "hourly", "--operating-hours", "00-23", "--api-base-url",
                          server.base_url, "--data-dir", str(tmp_path / "d"), env={"TMDB_API_KEY": API_KEY})
    assert code == 0 and result.succeeded and result.items == 20
    assert result.output.startswith(str(tmp_path / "d" / "snapshots" / "hourly-"))


def test_yaml_spec_file_with_overrides_and_data_dir_from_env(invoke, server, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"collection: weekly\napiKeySecretRef: {{name: tmdb}}\napiBaseUrl: {server.base_url}\n"
                    "sources: [{endpoint: upcoming, pages: 2}]\n")
    code, result = invoke("--spec", f"@{spec}", "--collection", "custom", "--min-items", "100000",
                          env={"TMDB_API_KEY": API_KEY, "THRESHER_DATA_DIR": str(tmp_path / "env-dir")})
    assert code == 4 and result.items == 40  # custom (flag) beats weekly (spec); min-items fails
    assert result.output.startswith(str(tmp_path / "env-dir" / "snapshots" / "custom-"))


def test_wrong_key_exits_2_after_one_request(invoke, server, tmp_path):
    code, result = invoke("--collection", "monthly", "--api-base-url", server.base_url, "--data-dir",
                          str(tmp_path / "d"), env={"TMDB_API_KEY": "wrong-key-abc"})
    assert code == 2 and "401" in result.error and server.stats()["requests"] == 1
    assert "wrong-key-abc" not in result.to_message()


def test_source_flags_imply_custom():
    built = cfg.build_job(None, {"sources": [cfg.parse_source("discover:3:with_genres=28,35&vote_average.gte=7"),
                                             cfg.parse_source("popular")]})
    assert built.collection == "custom" and built.sources[0].pages == 3
    assert built.sources[0].params == {"with_genres": "28,35", "vote_average.gte": "7"}
    with pytest.raises(ConfigError):
        cfg.parse_source("popular:many")


def test_base_url_and_credential_precedence():
    spec = job(apiBaseUrl="http://spec/3")
    env = {"TMDB_API_BASE_URL": "http://env/3"}
    assert cfg.resolve_base_url("http://flag/3/", spec, env) == "http://flag/3"
    assert cfg.resolve_base_url(None, spec, env) == "http://spec/3"
    assert cfg.resolve_base_url(None, job(), env) == "http://env/3"
    assert cfg.resolve_base_url(None, job(), {}) == "https://api.themoviedb.org/3"
    assert cfg.credentials_from_env({"TMDB_API_KEY": "k" * 32, "TMDB_READ_ACCESS_TOKEN": "t"}).api_key == "k" * 32
    assert cfg.credentials_from_env({"TMDB_API_KEY": " ", "TMDB_READ_ACCESS_TOKEN": "tok"}).bearer_token == "tok"
    assert str(cfg.resolve_data_dir(None, {})) == "thresher-data"


def test_export_base_url_precedence_flag_spec_env_default():
    spec = job(exportBaseUrl="http://spec/p/exports")
    env = {"TMDB_EXPORT_BASE_URL": "http://env/p/exports"}
    assert cfg.resolve_export_base_url("http://flag/p/exports/", spec, env) == "http://flag/p/exports"
    assert cfg.resolve_export_base_url(None, spec, env) == "http://spec/p/exports"
    assert cfg.resolve_export_base_url(None, job(), env) == "http://env/p/exports"
    assert cfg.resolve_export_base_url(None, job(), {}) == "https://files.tmdb.org/p/exports"
    with pytest.raises(ConfigError, match="export base URL"):
        cfg.resolve_export_base_url(None, job(), {"TMDB_EXPORT_BASE_URL": "files.tmdb.org"})


def test_spec_rendered_by_the_operator_is_accepted_verbatim():
    rendered = json.dumps(job(collection="weekly", enrich=True, appendToResponse=["credits"]).model_dump(
        mode="json", by_alias=True, exclude_none=True))
    assert cfg.build_job(rendered, {}).enrich is True
