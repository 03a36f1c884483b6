"""``thresher job drone ...``: the drone crop-health job."""

import typer

app = typer.Typer(help="Process drone images into crop-health indices.", no_args_is_help=True)
