"""Where ``write_result`` puts the run result, and what it must never replace.

The bug (issue 13): every path but /dev/termination-log went through a temporary file and a
rename, so as root ``--result-path /dev/null`` replaced the host's /dev/null with a 0600 file.
These tests use a real character device (mknod, as root) and a real FIFO.
"""

from __future__ import annotations

import os
import stat
import threading

from thresher.api.runresult import RunResult, parse_message
from thresher.jobs.harness import writes_in_place, write_result

RESULT = RunResult(jobType="container", succeeded=True, items=3)


def test_decision_regular_files_and_new_paths_are_renamed_everything_else_is_written_in_place():
    assert writes_in_place("/tmp/x/result.json", None) is False
    assert writes_in_place("/tmp/x/result.json", stat.S_IFREG | 0o644) is False
    assert writes_in_place("/tmp/x/null", stat.S_IFCHR | 0o666) is True
    assert writes_in_place("/tmp/x/fifo", stat.S_IFIFO | 0o600) is True
    assert writes_in_place("/tmp/x/sock", stat.S_IFSOCK | 0o600) is True
    # Streams and the kubelet's bind-mounted file, even when stat says "regular file".
    for path in ("/dev/stdout", "/dev/stderr", "/dev/fd/1", "/proc/self/fd/2", "/dev/termination-log"):
        assert writes_in_place(path, stat.S_IFREG | 0o644) is True, path


def test_a_character_device_stays_a_character_device(tmp_path):
    """Pins the /dev/null bug: the device node (same major/minor as /dev/null) must survive."""
    null = tmp_path / "null"  # mknod needs root (CAP_MKNOD): the test fails, not skips, without it
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = os.stat(null)
    write_result(RESULT, str(null))
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert after.st_mode == before.st_mode
    assert [p.name for p in tmp_path.iterdir()] == ["null"], "no temporary file left behind"


def test_a_fifo_receives_the_message_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "result.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    message = write_result(RESULT, str(fifo))
    reader.join(timeout=10)
    assert received == [message] and parse_message(received[0]).result == RESULT
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_regular_file_is_replaced_atomically(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    inode = os.stat(target).st_ino
    message = write_result(RESULT, str(target))
    assert target.read_text() == message
    assert os.stat(target).st_ino != inode, "a rename gives a new inode; an in-place write would not"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_symlink_to_a_regular_file_keeps_the_link_and_replaces_its_target(tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    message = write_result(RESULT, str(link))
    assert link.is_symlink() and target.read_text() == message
