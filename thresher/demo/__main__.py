"""``python -m thresher.demo [fake-tmdb|sample-fields] ...`` (see ``cli.py``)."""

from thresher.demo.cli import app

app(prog_name="python -m thresher.demo")
