"""``thresher demo``: the whole loop on one machine (``loop``), the files it applies (``assets``),
and its offline fakes (``fakes``). A package of its own so the product images leave it out."""


def run_demo(down: bool = False, node: bool | None = None) -> None:
    """What ``thresher demo`` runs (``loop.run_demo``); imported on call, so that the fakes
    (``thresher.demo.fakes``, used by tests and benchmarks) do not load the dev cluster."""
    from thresher.demo.loop import run_demo as run

    run(down=down, node=node)
