"""The limits db.health compares its measurements with: ``db.health.*`` in invoke.yaml.

    db:
      health:
        backup_age: {warning: 26h, critical: 50h}
        connections: {warning: 80%, critical: 95%}
        expected_standbys: 1

Each limit has a warning and a critical level; ``off`` turns a level off, and a check
with both off is not run. Durations are written as everywhere in the toolkit (30s, 15m,
26h, 1d), shares as percentages (80%), counts as whole numbers. Where a low value is the
bad one (free disk, cache hits) the check turns warning below its level.

This module is read when the tasks are defined (its DEFAULTS are the configuration's
defaults, so ``INVOKE_DB_HEALTH_BACKUP_AGE_WARNING`` works): it imports nothing heavy.
"""

from dataclasses import dataclass

from db.errors import ConfigError

OFF = "off"
DURATION, PERCENT, COUNT = "duration", "percent", "count"

# name: (kind, worse when "higher" or "lower", warning, critical)
LIMITS = {
    "response_time": (DURATION, "higher", "1s", "5s"),
    "backup_age": (DURATION, "higher", "26h", "50h"),
    "replica_age": (DURATION, "higher", "10m", "1h"),
    "replication_lag": (DURATION, "higher", "1m", "10m"),
    "connections": (PERCENT, "higher", "80%", "95%"),
    "transaction_age": (DURATION, "higher", "10m", "1h"),
    "idle_in_transaction": (DURATION, "higher", "1m", "10m"),
    "lock_wait": (DURATION, "higher", "30s", "5m"),
    "bloat": (PERCENT, "higher", "20%", "50%"),
    "cache_hit": (PERCENT, "lower", "90%", "80%"),
    "disk_free": (PERCENT, "lower", "10%", "5%"),
    "counters": (COUNT, "higher", "1", OFF),
    "unused_indexes": (COUNT, "higher", "1", OFF),
    "index_scans": (COUNT, "higher", "1", OFF),
}
# Settings that are no pair of levels.
EXPECTED_STANDBYS = "expected_standbys"  # standbys a primary must have streaming (or critical)


def defaults():
    """Return the ``db.health`` configuration's defaults (a fresh dict: Invoke merges it)."""
    levels = {
        name: {"warning": warning, "critical": critical}
        for name, (_kind, _worse, warning, critical) in LIMITS.items()
    }
    return {**levels, EXPECTED_STANDBYS: "0"}


@dataclass(frozen=True)
class Limit:
    """One check's two levels, in the check's unit (seconds, a fraction, a count); None is off."""

    name: str
    kind: str
    worse: str  # "higher" or "lower"
    warning: float | None
    critical: float | None

    @property
    def off(self):
        return self.warning is None and self.critical is None

    def crossed(self, value):
        """Return "critical", "warning" or None: the worst level ``value`` reaches."""
        for level in ("critical", "warning"):
            bound = getattr(self, level)
            if bound is not None and (value >= bound if self.worse == "higher" else value <= bound):
                return level
        return None


def read_limits(configured):
    """Return {name: Limit} from the ``db.health`` mapping (missing names: the defaults);
    raise ConfigError naming the setting that is not a level."""
    configured = dict(configured or {})  # Invoke's configuration: mappings, not dicts
    unknown = sorted(set(configured) - set(LIMITS) - {EXPECTED_STANDBYS})
    if unknown:
        known = ", ".join([*LIMITS, EXPECTED_STANDBYS])
        raise ConfigError(f"db.health.{unknown[0]} is no health setting (known: {known})")
    return {name: _limit(name, configured.get(name) or {}) for name in LIMITS}


def read_expected_standbys(configured):
    """Return how many standbys must stream from a primary (db.health.expected_standbys)."""
    text = dict(configured or {}).get(EXPECTED_STANDBYS, "0")
    return _count(f"db.health.{EXPECTED_STANDBYS}", text)


def _limit(name, levels):
    kind, worse, default_warning, default_critical = LIMITS[name]
    if not hasattr(levels, "keys"):
        raise ConfigError(
            f"db.health.{name} must be a mapping of warning and critical levels, "
            f"e.g. {{warning: {default_warning}, critical: {default_critical}}}"
        )
    bounds = [
        _level(f"db.health.{name}.{level}", kind, levels.get(level, default))
        for level, default in (("warning", default_warning), ("critical", default_critical))
    ]
    return Limit(name, kind, worse, *bounds)


def _level(setting, kind, text):
    if str(text).strip().lower() == OFF:
        return None
    if kind == DURATION:
        from db.schedule import parse_duration

        return parse_duration(setting, text).total_seconds()
    if kind == PERCENT:
        return _percent(setting, text)
    return _count(setting, text)


def _percent(setting, text):
    cleaned = str(text).strip().removesuffix("%")
    try:
        share = float(cleaned)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 100:
        raise ConfigError(f"{setting} {text!r} is not a percentage: write e.g. 80% (or off)")
    return share / 100


def _count(setting, text):
    cleaned = str(text).strip()
    if not cleaned.isdigit():
        raise ConfigError(f"{setting} {text!r} is not a whole number (or off)")
    return int(cleaned)
