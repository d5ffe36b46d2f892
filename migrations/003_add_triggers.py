"""Keep tags.count, albums.image_count and users.uploads right with triggers.

Each counter counts the rows of one table that point at its row:

    tags.count          rows of image_tags    with tag_id      = tags.id
    albums.image_count  rows of album_images  with album_id    = albums.id
    users.uploads       rows of images        with uploader_id = users.id

and three triggers per pointing table keep it so: +1 after an INSERT, -1 after
a DELETE (including rows removed by ON DELETE CASCADE, e.g. when an image is
deleted), and -1/+1 after an UPDATE that re-points the row to another parent.
Counters move by increments, not recounts: that is O(1) per row and stays right
when two transactions link the same tag at once. ``up`` first recounts every
counter from the data, so the triggers start from the truth.

The statements are kept per SQL dialect in DIALECTS, as (name, CREATE, DROP)
triples: ``up`` runs the CREATEs in order, ``down`` the DROPs in reverse order.

- SQLite: triggers with their statements inline.
- PostgreSQL: a PL/pgSQL function per trigger, named as the trigger; ``down``
  drops both. INSERT and DELETE triggers run once per statement over its
  transition table (one UPDATE per parent row), so bulk loads stay linear; the
  UPDATE triggers (a column list forbids transition tables) run per row.
- MySQL/MariaDB: triggers with their statements inline; UPDATE triggers test
  the column themselves (no ``UPDATE OF``, no ``WHEN``). MySQL fires no trigger
  for rows removed by ON DELETE CASCADE, so ``images_before_delete`` uncounts a
  deleted image's tag and album links before the cascade removes them. (The
  other cascades need nothing: deleting a tag or an album takes its counter
  row along, and user_likes has no counter.) Each CREATE or DROP TRIGGER
  commits on its own there: a failure midway leaves the earlier ones behind.

On another engine ``up`` refuses before running anything.
"""

import peewee as pw

# (counter table, counter column, pointing table, pointing column), frozen.
COUNTERS = (
    ("tags", "count", "image_tags", "tag_id"),
    ("albums", "image_count", "album_images", "album_id"),
    ("users", "uploads", "images", "uploader_id"),
)
# The pointing tables of COUNTERS whose rows go with their image (ON DELETE CASCADE on
# their image_id), frozen.
IMAGE_LINKS = ("image_tags", "album_images")


def recount_statements():
    """Return portable UPDATEs that set every counter from the rows pointing at it."""
    return [
        f"UPDATE {table} SET {counter} = (SELECT COUNT(*) FROM {source} "
        f"WHERE {source}.{column} = {table}.id)"
        for table, counter, source, column in COUNTERS
    ]


def sqlite_triggers():
    """Return [(name, CREATE TRIGGER, DROP TRIGGER)] for SQLite."""
    triggers = []
    for table, counter, source, column in COUNTERS:
        add = _bump(table, counter, "+", f"NEW.{column}")
        remove = _bump(table, counter, "-", f"OLD.{column}")
        events = (
            ("insert", f"AFTER INSERT ON {source} FOR EACH ROW", add),
            ("delete", f"AFTER DELETE ON {source} FOR EACH ROW", remove),
            (
                "update",
                f"AFTER UPDATE OF {column} ON {source} "
                f"FOR EACH ROW WHEN OLD.{column} <> NEW.{column}",
                f"{remove} {add}",
            ),
        )
        for event, when, body in events:
            name = f"{source}_after_{event}"
            triggers.append(
                (name, f"CREATE TRIGGER {name} {when} BEGIN {body} END", f"DROP TRIGGER {name}")
            )
    return triggers


def _bump(table, counter, sign, parent_id):
    return f"UPDATE {table} SET {counter} = {counter} {sign} 1 WHERE id = {parent_id};"


def postgres_triggers():
    """Return [(name, CREATE, DROP)] for PostgreSQL: each trigger after its function."""
    triggers = []
    for table, counter, source, column in COUNTERS:
        events = (
            (
                "insert",
                f"AFTER INSERT ON {source} REFERENCING NEW TABLE AS changed FOR EACH STATEMENT",
                _postgres_bump_by_statement(table, counter, "+", column),
            ),
            (
                "delete",
                f"AFTER DELETE ON {source} REFERENCING OLD TABLE AS changed FOR EACH STATEMENT",
                _postgres_bump_by_statement(table, counter, "-", column),
            ),
            (
                "update",
                f"AFTER UPDATE OF {column} ON {source} "
                f"FOR EACH ROW WHEN (OLD.{column} IS DISTINCT FROM NEW.{column})",
                _bump(table, counter, "-", f"OLD.{column}")
                + " "
                + _bump(table, counter, "+", f"NEW.{column}"),
            ),
        )
        for event, when, body in events:
            name = f"{source}_after_{event}"
            triggers.append(
                (
                    f"{name}()",
                    f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                    f"AS $$ BEGIN {body} RETURN NULL; END $$",
                    f"DROP FUNCTION {name}()",
                )
            )
            triggers.append(
                (
                    name,
                    f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {name}()",
                    f"DROP TRIGGER {name} ON {source}",
                )
            )
    return triggers


def _postgres_bump_by_statement(table, counter, sign, column):
    # One UPDATE per statement, a row per parent: a bulk load (COPY, insert_many)
    # touches each counter row once, not once per inserted row. Updating a hot
    # row once per row makes PostgreSQL keep a dead version per update until
    # the transaction ends, which makes long loads quadratic.
    return (
        f"UPDATE {table} AS parent SET {counter} = parent.{counter} {sign} changes.n "
        f"FROM (SELECT {column} AS id, COUNT(*) AS n FROM changed GROUP BY {column}) AS changes "
        "WHERE parent.id = changes.id;"
    )


def mysql_triggers():
    """Return [(name, CREATE, DROP)] for MySQL and MariaDB."""
    triggers = []
    for table, counter, source, column in COUNTERS:
        add = _bump(table, counter, "+", f"NEW.{column}")
        remove = _bump(table, counter, "-", f"OLD.{column}")
        events = (
            ("insert", "AFTER INSERT", f"BEGIN {add} END"),
            ("delete", "AFTER DELETE", f"BEGIN {remove} END"),
            (
                "update",
                "AFTER UPDATE",
                f"BEGIN IF NOT (OLD.{column} <=> NEW.{column}) THEN {remove} {add} END IF; END",
            ),
        )
        for event, when, body in events:
            name = f"{source}_after_{event}"
            triggers.append(
                (
                    name,
                    f"CREATE TRIGGER {name} {when} ON {source} FOR EACH ROW {body}",
                    f"DROP TRIGGER {name}",
                )
            )
    # MySQL fires no trigger for rows removed by ON DELETE CASCADE: uncount an image's
    # links before it goes, while they are still there (a pair is linked at most once).
    uncount_links = " ".join(
        f"UPDATE {table} SET {counter} = {counter} - 1 "
        f"WHERE id IN (SELECT {column} FROM {source} WHERE image_id = OLD.id);"
        for table, counter, source, column in COUNTERS
        if source in IMAGE_LINKS
    )
    name = "images_before_delete"
    triggers.append(
        (
            name,
            f"CREATE TRIGGER {name} BEFORE DELETE ON images FOR EACH ROW BEGIN {uncount_links} END",
            f"DROP TRIGGER {name}",
        )
    )
    return triggers


# dialect -> the function returning its triggers
DIALECTS = {
    "sqlite": sqlite_triggers,
    "postgres": postgres_triggers,
    "mysql": mysql_triggers,
}


def up(migrator, db):
    triggers = DIALECTS[_dialect(db)]()
    statements = recount_statements() + [create for _, create, _ in triggers]
    migrator.migrate(*(migrator.sql(statement) for statement in statements))


def down(migrator, db):
    triggers = DIALECTS[_dialect(db)]()
    migrator.migrate(*(migrator.sql(drop) for _, _, drop in reversed(triggers)))


def _dialect(db):
    """Return the DIALECTS key for db, or refuse an engine without triggers written yet."""
    if isinstance(db, pw.SqliteDatabase):
        return "sqlite"
    if isinstance(db, pw.PostgresqlDatabase):
        return "postgres"
    if isinstance(db, pw.MySQLDatabase):
        return "mysql"
    raise NotImplementedError(
        f"003_add_triggers has no counter triggers for {type(db).__name__} yet "
        f"(written so far: {', '.join(DIALECTS)}); add its statements to DIALECTS "
        "in migrations/003_add_triggers.py"
    )
