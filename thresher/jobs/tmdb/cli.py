"""``thresher job tmdb ...``: the TMDB collection job."""

import typer

app = typer.Typer(help="Collect movie data from TMDB.", no_args_is_help=True)
