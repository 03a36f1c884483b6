"""The processes a dev cluster starts (etcd, apiserver, ..., kubelet, containerd): one pid file
per component under the state directory's ``pids/``, and whether a pid is still one of ours."""

from __future__ import annotations

import time
from pathlib import Path


def pid_file(pid_dir: Path, name: str) -> Path:
    return pid_dir / f"{name}.pid"


def read_pid(pid_dir: Path, name: str) -> int | None:
    """The recorded pid, or None when there is none (never started, or a damaged file)."""
    try:
        return int(pid_file(pid_dir, name).read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pid_dir: Path, name: str, pid: int) -> None:
    pid_dir.mkdir(parents=True, exist_ok=True)
    pid_file(pid_dir, name).write_text(f"{pid}\n")


def is_zombie(pid: int) -> bool:
    """True for a zombie, and for a pid that no longer exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def owned(pid: int, marker: str, attempts: int = 20) -> bool:
    """True when ``pid`` is alive and its command line mentions ``marker`` (our state directory).

    Right after ``Popen`` returns, the child may still be inside execve: its cmdline reads empty
    for a moment (longer on a loaded machine). That is not an exit, so an empty cmdline of a live
    process is read again for up to about a second before it counts as not ours."""
    for attempt in range(attempts):
        if is_zombie(pid):
            return False
        line = cmdline(pid)
        if line:
            return marker in line
        time.sleep(0.05)
    return False
