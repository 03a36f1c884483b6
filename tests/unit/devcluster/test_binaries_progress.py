"""Build steps of thresher.devcluster.binaries show progress instead of minutes of silence."""

from __future__ import annotations

import pytest

from thresher.devcluster.binaries import BuildError, _run


def test_a_long_step_logs_a_line_per_interval_in_non_tty_logs(tmp_path):
    """Issue 16: a cold Go build printed nothing for minutes per binary, so CI logs looked hung.
    Now a step that outlasts the interval logs 'still running' with the elapsed time."""
    lines: list[str] = []
    out = _run("compile kube-apiserver", ["sh", "-c", "sleep 0.7; echo built"], tmp_path, lines.append,
               interval=0.2, tty=False)
    assert out == "built\n"
    assert lines[0].startswith("  [compile kube-apiserver] sh -c")
    still = [line for line in lines if "still running" in line]
    assert 2 <= len(still) <= 4, lines
    assert all(line.startswith("  [compile kube-apiserver] still running, ") and line.endswith("s elapsed")
               for line in still), still
    assert lines[-1].startswith("  [compile kube-apiserver] done in ")


def test_a_short_step_logs_no_progress_lines(tmp_path):
    lines: list[str] = []
    _run("resolve modules", ["true"], tmp_path, lines.append, interval=5, tty=False)
    assert not [line for line in lines if "still running" in line], lines


def test_a_failed_step_names_the_step_and_shows_the_output_tail(tmp_path):
    """Output goes to files (a chatty `go` cannot block on a full pipe) and still reaches the error."""
    script = "for i in $(seq 1 20000); do echo line $i; done >&2; exit 3"
    with pytest.raises(BuildError) as err:
        _run("compile kubelet", ["sh", "-c", script], tmp_path, lambda _m: None, interval=5, tty=False)
    message = str(err.value)
    assert message.startswith("build step 'compile kubelet' failed (exit 3)")
    assert "line 20000" in message and "line 19975" not in message  # the last 25 lines only


def test_on_a_terminal_a_spinner_replaces_the_lines(tmp_path):
    lines: list[str] = []
    _run("compile etcd", ["sh", "-c", "sleep 0.6"], tmp_path, lines.append, interval=0.1, tty=True)
    assert not [line for line in lines if "still running" in line], lines
    assert lines[-1].startswith("  [compile etcd] done in ")
