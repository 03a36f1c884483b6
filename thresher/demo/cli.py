"""``python -m thresher.demo``: the demo (what ``thresher demo`` runs) and its fakes.

Without a sub-command it runs the demo; ``fake-tmdb`` serves the offline TMDB API on the host
(the demo's pods reach it over the real node's bridge, so the job images need not carry it) and
``sample-fields`` writes synthetic drone fields with known truth. The fakes are demo and test
tools, not product: they ship in the wheel, never in the images (Dockerfile, .dockerignore).
Heavy imports live inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="The local demo (control plane, operator, examples) and its offline fakes.",
                  add_completion=False)


@app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    down: bool = typer.Option(False, "--down", help="Stop the demo and remove its state."),
    node: Optional[bool] = typer.Option(
        None, "--node/--no-node",
        help="Run the jobs as real containers on a local kubelet node (needs root, containerd, runc, CNI, "
             "buildah). Default: when this machine can; otherwise every pod is simulated by kwok."),
) -> None:
    """Local control plane + operator + example schedules, each run once (what `make demo` runs)."""
    if ctx.invoked_subcommand is not None:
        return
    from thresher.demo.loop import run_demo

    run_demo(down=down, node=node)


@app.command("fake-tmdb")
def fake_tmdb(
    port: int = typer.Option(8089, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0.0, help="Delay before every response."),
    fault: Optional[list[str]] = typer.Option(None, "--fault", help="Repeatable: KIND:RATE (503:0.1) or KIND@MATCH[*N] (500@movie/popular?page=2*3, *all)."),
    seed: int = typer.Option(7, "--seed", help="Seed of the data and of rate-based faults."),
    rate_limit: Optional[float] = typer.Option(None, "--rate-limit", help="Requests a second before 429s."),
    rate_limit_burst: Optional[float] = typer.Option(None, "--rate-limit-burst", help="Size of the rate limit's token bucket (default: one second's worth)."),
    rate_limit_retry_after: Optional[str] = typer.Option(None, "--rate-limit-retry-after", help="Retry-After sent with rate-limit 429s (default: none, like TMDB's CDN)."),
    retry_after: str = typer.Option("1", "--retry-after", help="Retry-After of 429-retry-after faults."),
    movies: int = typer.Option(15000, "--movies", min=100, help="Size of the fake catalog."),
    api_key: str = typer.Option("fake-api-key", "--api-key", help="The v3 key the server accepts."),
    bearer_token: str = typer.Option("fake-read-token", "--bearer-token", help="The v4 token the server accepts."),
    bad_data_rate: float = typer.Option(0.0, "--bad-data-rate", min=0.0, max=1.0, help="Share of movies with invalid fields."),
    timeout_sleep: float = typer.Option(3.0, "--timeout-sleep", help="How long a timeout fault stalls (seconds)."),
    export_bad_line_rate: float = typer.Option(0.0, "--export-bad-line-rate", min=0.0, max=1.0, help="Share of broken lines in the daily ID export."),
    export_extra_ids: int = typer.Option(0, "--export-extra-ids", min=0, help="Ids beyond the catalog in the daily ID export (a big export cheaply)."),
) -> None:
    """Run the fake TMDB API until interrupted; prints its base URL as JSON on the first line."""
    import json
    import signal
    import sys

    from thresher.demo.fakes.tmdb_server import FakeConfig, FakeTmdbServer, parse_fault

    rates: dict[str, float] = {}
    schedule = []
    try:
        for text in fault or []:
            parsed = parse_fault(text)
            if isinstance(parsed, tuple):
                rates[parsed[0]] = parsed[1]
            else:
                schedule.append(parsed)
        config = FakeConfig(seed=seed, movies=movies, api_key=api_key, bearer_token=bearer_token,
                            latency_ms=latency_ms, fault_rates=rates, fault_schedule=schedule,
                            rate_limit=rate_limit, rate_limit_burst=rate_limit_burst, retry_after=retry_after,
                            rate_limit_retry_after=rate_limit_retry_after, timeout_sleep_s=timeout_sleep,
                            bad_data_rate=bad_data_rate, export_bad_line_rate=export_bad_line_rate,
                            export_extra_ids=export_extra_ids)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    server = FakeTmdbServer(config, host, port)

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"baseUrl": server.base_url, "exportBaseUrl": server.export_base_url, "apiKey": api_key,
                      "port": server.port}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.fake.stopping.set()
        server.httpd.server_close()
        print(json.dumps({"stats": server.stats()}), file=sys.stderr, flush=True)


@app.command("sample-fields")
def sample_fields(
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Data directory (default $THRESHER_DATA_DIR, else ./thresher-data)."),
    input_path: str = typer.Option("input", "--input", help="Folder under the data dir to write into."),
    count: int = typer.Option(4, "--count", min=1, max=1000, help="RGB JPEG fields to write."),
    multispectral: int = typer.Option(2, "--multispectral", min=0, max=100, help="MicaSense captures to write."),
    width: int = typer.Option(1024, "--width", min=16, help="Image width (multiple of 16)."),
    height: int = typer.Option(768, "--height", min=16, help="Image height (multiple of 16)."),
    video: bool = typer.Option(False, "--video", help="Also write a short MPEG-4 video."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Write synthetic fields with known vegetation and stressed fractions (truth.json beside them)."""
    from thresher.demo.fakes.drone_fields import make_samples
    from thresher.jobs.drone.cli import data_dir_of
    from thresher.jobs.harness import atomic_write_text

    if width % 16 or height % 16:
        raise typer.BadParameter("width and height must be multiples of 16")
    folder = data_dir_of(data_dir) / input_path
    truths = make_samples(folder, count, (height, width), seed, multispectral, video)
    atomic_write_text(folder / ".truth.json", json.dumps(truths, indent=1))
    typer.echo(f"wrote {len(truths)} sample inputs to {folder} (truth in {folder / '.truth.json'})")
