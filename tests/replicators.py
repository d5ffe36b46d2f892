"""``invoke db.replicate`` as the tests run it: a real process, its output in files.

    replicator = Replicator([*INVOKE, "db.replicate", "--init"], environment, logs)
    replicator.wait_for("taken in", count=2)     # its output says it twice (fails if it ended)
    replicator.children()                        # the processes it started: its tool
    replicator.stop(signal.SIGKILL)              # its exit status

Run through ``runuser`` (as the owner of a server's data), the signals go to the task
itself: runuser answers a SIGTERM by killing itself with it, not by waiting for the task.
"""

import os
import signal
import subprocess
import time
from pathlib import Path


class Replicator:
    """A running ``invoke db.replicate``; stdout and stderr in the folder ``logs``."""

    def __init__(self, command, env, logs, cwd=None):
        Path(logs).mkdir(parents=True, exist_ok=True)
        self.out, self.err = Path(logs) / "stdout", Path(logs) / "stderr"
        self.through_runuser = command[0] == "runuser"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd
            )

    def output(self):
        return self.out.read_text() + self.err.read_text()

    def wait_for(self, words, count=1, timeout=60):
        """Wait until stdout holds ``words`` ``count`` times; fail if the task ends first."""
        deadline = time.monotonic() + timeout
        while self.out.read_text().count(words) < count:
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    @property
    def task_pid(self):
        """The id of the invoke process (runuser's child when run through runuser)."""
        if self.through_runuser:
            (child,) = children_of(self.process.pid)
            return child
        return self.process.pid

    def children(self):
        """Return the ids of the processes the task started (its tool)."""
        return children_of(self.task_pid)

    def stop(self, number=signal.SIGTERM):
        """Send the task ``number``; return its exit status."""
        if self.process.poll() is None:
            os.kill(self.task_pid, number)
        return self.process.wait(timeout=60)

    def kill(self):
        """End it, whatever it is doing (a test's cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def children_of(pid):
    """Return the ids of the processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_until_gone(pids, timeout=10):
    """Wait until none of the processes ``pids`` runs."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"{pids} still running"
        time.sleep(0.05)
