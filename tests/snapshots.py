"""Whole-database snapshots, to assert that two databases (or one, twice) hold the same."""

import hashlib
import sqlite3
from contextlib import closing

# Columns that record *when* something ran, not what the data is.
RUN_TIMES = {"migrations": ("applied_at", "duration_ms"), "seeders": ("applied_at",)}


def content(path):
    """Return {table: sorted rows} for every table of an SQLite file, run times left out."""
    with closing(sqlite3.connect(path)) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        snapshot = {}
        for table in tables:
            columns = [
                row[1]
                for row in connection.execute(f'PRAGMA table_info("{table}")')
                if row[1] not in RUN_TIMES.get(table, ())
            ]
            selected = ", ".join(f'"{c}"' for c in columns)
            rows = connection.execute(f'SELECT {selected} FROM "{table}"').fetchall()
            snapshot[table] = sorted(rows, key=repr)
    return snapshot


def checksum(path):
    """Return a SHA-256 of the database's content (see ``content``)."""
    return hashlib.sha256(repr(sorted(content(path).items())).encode()).hexdigest()


def schema(path):
    """Return every schema object (type, name, sql) of an SQLite file."""
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
