"""Doing a job again and again, every so long, until told to stop: ``db.backup --every``.

    period = parse_duration("--every", "6h")         # timedelta(hours=6)
    with stop_on_signals():                           # SIGTERM, like Ctrl-C, ends the loop
        run_every(period, job, on_failure)            # returns when stopped

Each run starts one period after the previous one started (at once when a run took
longer than the period). A run that fails is reported through ``on_failure`` and tried
again at the next period: a server restarting or a disk filling up does not end the
loop. A stop signal interrupts the run in progress where it stands (the job cleans up
as it would after Ctrl-C: a backup in the making is deleted) and ends the loop.
"""

import datetime
import re
import signal
import time
from contextlib import contextmanager

from db.errors import ConfigError, DbError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"(\d+)([smhdw])")


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGINT) arrived.

    Not an Exception (only the loop's owner catches it), and a KeyboardInterrupt: the
    drivers treat it as Ctrl-C, so a query it interrupts is cancelled on the server and
    the connection stays usable for the cleanup that follows (psycopg otherwise leaves
    it busy, and the cleanup's own error would take the stop's place)."""


def parse_duration(option, text):
    """Return the timedelta of ``text`` such as 30s, 15m, 6h, 1d, 2w or 1h30m; raise
    ConfigError naming ``option`` when it is not one."""
    cleaned = str(text).strip().lower()
    parts = DURATION.findall(cleaned)
    if not cleaned or "".join(f"{n}{u}" for n, u in parts) != cleaned:
        raise ConfigError(
            f"{option} {text!r} is not a duration: write a number and a unit "
            "(s, m, h, d, w), e.g. 30s, 15m, 6h, 1d or 1h30m"
        )
    seconds = sum(int(number) * UNITS[unit] for number, unit in parts)
    if seconds < 1:
        raise ConfigError(f"{option} {text!r} must be at least 1s")
    return datetime.timedelta(seconds=seconds)


def format_age(delta):
    """Return a duration in the units parse_duration reads, largest first (e.g. 1d2h)."""
    seconds = max(0, int(delta.total_seconds()))
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"


def utc_moment():
    return datetime.datetime.now(datetime.timezone.utc)


class StopSignals:
    """The stop signal received so far (``received``: its name, or None)."""

    def __init__(self):
        self.received = None

    def raise_if_received(self):
        if self.received:
            raise Stopped(self.received)


@contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Raise Stopped in the main thread when one of ``signals`` arrives, for the block;
    yield the StopSignals that remembers it (a cleanup that fails after the stop may
    raise its own error in Stopped's place: the loop asks this instead)."""
    stops = StopSignals()

    def stop(number, frame):
        stops.received = signal.Signals(number).name
        raise Stopped(stops.received)

    previous = {number: signal.signal(number, stop) for number in signals}
    try:
        yield stops
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_every(period, job, on_failure, stops=None, clock=time.monotonic, sleep=time.sleep):
    """Call ``job()`` every ``period`` until Stopped is raised (or ``stops``, a
    StopSignals, has received one); a DbError or OSError of a run goes to
    ``on_failure(error)`` and the loop goes on. A run that fails after a stop signal
    failed because of it: it is not reported."""
    stops = stops or StopSignals()
    while True:
        started = clock()
        try:
            job()
        except BrokenPipeError:  # the reader of | head went away: end, as any command does
            raise
        except (DbError, OSError) as exc:
            stops.raise_if_received()
            on_failure(exc)
        stops.raise_if_received()
        sleep(max(0.0, started + period.total_seconds() - clock()))
