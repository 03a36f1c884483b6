"""The one process supervisor of the dev cluster, the real node and the demo: real child
processes, short timeouts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from thresher.devcluster.process import Supervisor, cwd_within, free_port, port_is_free


class Boom(RuntimeError):
    pass


def _py(code: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", code, *extra]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_records_pid_and_log_and_stop_ends_it(tmp_path):
    sup = Supervisor(tmp_path / "state", Boom)
    proc = sup.start("sleeper", _py("print('hello', flush=True); import time; time.sleep(30)"), lambda m: None)
    assert sup.pid("sleeper") == proc.pid and sup.running("sleeper")
    sup.wait("sleeper", lambda: "hello" in sup.log_tail("sleeper"), 10, "greeting")
    assert sup.stop("sleeper", lambda m: None, timeout=5)
    assert _gone(proc.pid) and not sup.running("sleeper")
    assert not sup.stop("sleeper", lambda m: None)  # nothing left to stop


def test_stop_kills_what_ignores_term(tmp_path):
    """TERM first; a process that ignores it is KILLed after the timeout."""
    sup = Supervisor(tmp_path / "state", Boom)
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    proc = sup.start("stubborn", _py(code), lambda m: None)
    sup.wait("stubborn", lambda: "ready" in sup.log_tail("stubborn"), 10, "ready")
    start = time.monotonic()
    sup.stop("stubborn", lambda m: None, timeout=1)
    assert 1 <= time.monotonic() - start < 10
    assert _gone(proc.pid)


def test_wait_fails_at_once_with_the_log_tail_when_the_process_exits(tmp_path):
    """An exit while waiting is reported now, not after the timeout, with the log's last lines
    (the cluster's, the node's and the demo's waits all had to say why)."""
    sup = Supervisor(tmp_path / "state", Boom)
    sup.start("crasher", _py("import sys; print('bad flag --x'); sys.exit(3)"), lambda m: None)
    start = time.monotonic()
    with pytest.raises(Boom, match=r"crasher: exited while waiting for ready(.|\n)*bad flag --x"):
        sup.wait("crasher", lambda: False, 30, "ready")
    assert time.monotonic() - start < 10


def test_wait_times_out_naming_what_it_waited_for(tmp_path):
    sup = Supervisor(tmp_path / "state", Boom)
    sup.start("slow", _py("import time; time.sleep(30)"), lambda m: None)
    try:
        with pytest.raises(Boom, match=r"slow: not serving after 1s"):
            sup.wait("slow", lambda: False, 1, "serving")
    finally:
        sup.stop("slow", lambda m: None, timeout=5)


def test_a_recycled_pid_is_not_ours_and_is_never_killed(tmp_path):
    """A pid file that names a stranger (a recycled pid) does not count as running and `stop`
    leaves that process alone."""
    sup = Supervisor(tmp_path / "state", Boom)
    stranger = subprocess.Popen(_py("import time; time.sleep(30)"), cwd=tmp_path)
    try:
        sup.pid_dir.mkdir(parents=True)
        (sup.pid_dir / "etcd.pid").write_text(f"{stranger.pid}\n")
        assert not sup.running("etcd")
        assert not sup.stop("etcd", lambda m: None, timeout=1)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_started_elsewhere_is_ours_by_its_command_line_or_working_dir(tmp_path):
    """`dev status` and `down` run in another process than `up`: ownership comes from /proc
    (the state dir in the command line, as for etcd & co., or as the working directory, as for
    the demo's operator, whose arguments do not name it)."""
    state = tmp_path / "state"
    state.mkdir()
    by_arg = subprocess.Popen(_py("import time; time.sleep(30)", str(state)), cwd=tmp_path)
    by_cwd = subprocess.Popen(_py("import time; time.sleep(30)"), cwd=state)
    try:
        other = Supervisor(state, Boom)
        assert other.owns(by_arg.pid) and other.owns(by_cwd.pid)
        assert cwd_within(by_cwd.pid, state) and not cwd_within(by_arg.pid, state)
    finally:
        for proc in (by_arg, by_cwd):
            proc.kill()
            proc.wait()


def test_stdout_can_go_to_its_own_file(tmp_path):
    """The fake TMDB server announces its port on stdout; its log keeps stderr."""
    sup = Supervisor(tmp_path / "state", Boom)
    out = tmp_path / "state" / "logs" / "talker.out"
    code = "import sys, time; print('{\"port\": 1}', flush=True); print('noise', file=sys.stderr, flush=True); time.sleep(30)"
    sup.start("talker", _py(code), lambda m: None, stdout=out)
    try:
        sup.wait("talker", lambda: "noise" in sup.log_tail("talker"), 10, "announcing")
        assert out.read_text() == '{"port": 1}\n'
        assert sup.log_tail("talker") == "noise"
    finally:
        sup.stop("talker", lambda m: None, timeout=5)


def test_free_port_is_free():
    port = free_port()
    assert port_is_free(port)
