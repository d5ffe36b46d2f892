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

The statements are kept per SQL dialect in DIALECTS. Only SQLite is written so
far; on another engine ``up`` refuses before running anything. (MySQL does not
fire triggers for cascaded deletes, so its version will need a BEFORE DELETE
trigger on images as well.)
"""

import peewee as pw

# (counter table, counter column, pointing table, pointing column), frozen.
COUNTERS = (
    ("tags", "count", "image_tags", "tag_id"),
    ("albums", "image_count", "album_images", "album_id"),
    ("users", "uploads", "images", "uploader_id"),
)


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
        add = _sqlite_bump(table, counter, "+", f"NEW.{column}")
        remove = _sqlite_bump(table, counter, "-", f"OLD.{column}")
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


def _sqlite_bump(table, counter, sign, parent_id):
    return f"UPDATE {table} SET {counter} = {counter} {sign} 1 WHERE id = {parent_id};"


# dialect -> the function returning its triggers
DIALECTS = {
    "sqlite": sqlite_triggers,
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
    raise NotImplementedError(
        f"003_add_triggers has no counter triggers for {type(db).__name__} yet "
        f"(written so far: {', '.join(DIALECTS)}); add its statements to DIALECTS "
        "in migrations/003_add_triggers.py"
    )
