"""Running the protection tools as child processes: they see only what they need, die
with us, and are asked to stop before they are killed.

    child = subprocess.Popen(command, env=tool_environment(...), preexec_fn=die_with_parent)
    stop_child(child, timeout=30)         # SIGTERM, then SIGKILL if it hangs
    write_private(path, text)             # a new 0600 file (configurations, option files)
"""

import os
import signal
import subprocess
import sys


def die_with_parent():
    """Have the kernel stop the child when we die, however (SIGKILL included): an orphan
    would go on replicating beside the next db.replicate. (A preexec_fn: runs in the child.)"""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_child(child, timeout):
    """Ask ``child`` to stop (SIGTERM: the tools finish or abandon their work cleanly);
    kill it when it has not ended after ``timeout`` seconds."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def write_private(path, text):
    """Write ``text`` to the new file ``path``, readable by its owner only (0600)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)
