"""The real node's error type and the one way it runs a host command."""

from __future__ import annotations

import subprocess


class NodeError(RuntimeError):
    """The real node could not be started or stopped; the message names the failing check."""


def sh(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc
