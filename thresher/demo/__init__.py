"""``thresher demo``: the whole loop on one machine (``loop``), the files it applies (``assets``),
and its offline fakes (``fakes``). A package of its own so the product images leave it out."""

from thresher.demo.loop import run_demo

__all__ = ["run_demo"]
