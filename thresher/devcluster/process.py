"""The one process supervisor of the dev cluster and the demo.

Every long-lived process they start (etcd, kube-apiserver, ..., kwok; containerd and the
kubelet of the real node; the demo's operator, Prometheus and fake TMDB server) goes through a
``Supervisor`` rooted at the cluster's state directory: started detached (its own session, so it
outlives ``thresher dev up``) with its output in ``logs/<name>.log`` and its pid in
``pids/<name>.pid``; counted as running only while that pid is still ours (``owns``: a recycled
pid is never taken for, or killed as, one of ours); waited on until ready, failing at once when
it exits; stopped with TERM, then KILL; and every failure quotes the tail of its log.

Nothing here imports the rest of Thresher: the cluster, the node and the demo build on it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

Log = Callable[[str], None]


# --- ports ------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- pid files and /proc ------------------------------------------------------------------

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


def cwd_within(pid: int, folder: Path) -> bool:
    """Whether the process works inside ``folder`` (the supervisor starts every process there)."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return cwd == folder or folder in cwd.parents


def owned(pid: int, marker: str, attempts: int = 20) -> bool:
    """True when ``pid`` is alive and its command line mentions ``marker`` (our state directory).

    Right after ``Popen`` returns, the child may still be inside execve: its cmdline reads empty
    for a moment (longer on a loaded machine). That is not an exit, so an empty cmdline of a live
    process is read again for up to about a second before it counts as not ours."""
    for _ in range(attempts):
        if is_zombie(pid):
            return False
        line = cmdline(pid)
        if line:
            return marker in line
        time.sleep(0.05)
    return False


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- the supervisor -----------------------------------------------------------------------

class Supervisor:
    """The processes recorded under one state directory; failures raise ``error``."""

    def __init__(self, state_dir: Path, error: type[Exception] = RuntimeError) -> None:
        self.state_dir = Path(state_dir)
        self.log_dir = self.state_dir / "logs"
        self.pid_dir = self.state_dir / "pids"
        self.error = error
        self._children: dict[str, subprocess.Popen] = {}  # started by this process: poll() is exact

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        return read_pid(self.pid_dir, name)

    def owns(self, pid: int) -> bool:
        """``pid`` is alive and ours: its command line names the state directory, or (for the
        demo's processes, whose arguments do not) it runs inside it."""
        return owned(pid, str(self.state_dir)) or (not is_zombie(pid) and cwd_within(pid, self.state_dir))

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and self.owns(pid)

    def start(self, name: str, args: Sequence[str], log: Log, *, cwd: Path | None = None,
              env: dict[str, str] | None = None, stdout: Path | None = None) -> subprocess.Popen:
        """Start ``args`` detached, output appended to its log (stdout to ``stdout`` instead,
        for a process that reports on it), and record its pid."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(cwd or self.state_dir)
        workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log_file:
            out = open(stdout, "wb") if stdout else None
            try:
                proc = subprocess.Popen(
                    list(args), stdout=out or log_file, stderr=log_file if out else subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir, env=env)
            finally:
                if out:
                    out.close()
        write_pid(self.pid_dir, name, proc.pid)
        self._children[name] = proc
        log(f"started {name} (pid {proc.pid})")
        return proc

    def exited(self, name: str) -> bool:
        child = self._children.get(name)
        return child.poll() is not None if child else not self.running(name)

    def wait(self, name: str, ready: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.2) -> None:
        """Until ``ready()``; raise (with the log's tail) when ``name`` exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited(name):
                raise self.failure(name, f"exited while waiting for {what}")
            if ready():
                return
            time.sleep(interval)
        raise self.failure(name, f"not {what} after {timeout:.0f}s")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def failure(self, name: str, what: str) -> Exception:
        return self.error(f"{name}: {what}\n--- last lines of {self.log_path(name)} ---\n{self.log_tail(name)}")

    def stop(self, name: str, log: Log, timeout: float = 20) -> bool:
        """TERM, then KILL after ``timeout``; True when there was a process of ours to stop."""
        pid = self.pid(name)
        if pid is None or not self.owns(pid):
            return False
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.owns(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.owns(pid):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:  # reap it when this process started it (tests), so no zombie stays behind
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        self._children.pop(name, None)
        log(f"stopped {name} (pid {pid})")
        return True
