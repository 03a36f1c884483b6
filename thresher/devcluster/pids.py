"""Pid files of the processes a dev cluster starts (etcd, apiserver, ..., kubelet, containerd):
one file per component under the state directory's ``pids/``."""

from __future__ import annotations

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
