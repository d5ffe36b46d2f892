"""How long a migration may wait for a lock, and run a statement.

    parse_timeout("db.lock_timeout", "5s")     # 5 (seconds); "off" or "0" -> 0, no limit

The configured ``db.lock_timeout`` (default 5s) and ``db.statement_timeout`` (default off)
apply to every migration step; a step may set its own (db.loader.StepOptions).
"""

OFF = ("off", "0")


def parse_timeout(option, text):
    """Return ``text`` (such as 5s, 2m, 1h30m, or off) in whole seconds, 0 meaning no limit;
    raise ConfigError naming ``option`` when it is not a timeout."""
    from db.schedule import parse_duration

    if str(text).strip().lower() in OFF:
        return 0
    return int(parse_duration(option, text).total_seconds())
