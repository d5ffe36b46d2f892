"""Index the gallery's hottest pages for the way they are read: partial and covering indexes.

Each index below serves one query of db/models.py and was kept only where the plan
changed and benchmarks/search.py (or ``invoke db.explain --builtin`` on a populated
gallery) showed it faster; the figures are in the README ("Indexes for the typical
queries"):

- ``images_public_newest``: ``Image.visible_to(None)``, the anonymous visitor's pages,
  newest first (``WHERE privacy = 'public' ORDER BY uploaded_at DESC, id``), and the
  ``LIKE`` search that pages through it. 002's ``images_uploaded_at`` gives the order of
  ``uploaded_at`` alone and reads private rows it then throws away; this one holds public
  rows only, in the exact order of the page (descending date, ascending id as the
  tie-break), so a page is its first 20 entries and nothing is sorted.
- ``user_likes_user_newest``: ``Image.liked_by(user)``, most recently liked first. The
  primary key (user_id, image_id) finds a user's likes but not in liked_at order: every
  like of the user was read and sorted to show the first 20. Ordered by liked_at and
  carrying image_id, the index alone gives the page in order.
- ``image_tags_tag_image``: ``Image.tagged(name)`` reads a tag's links; with image_id in
  the index they come from the index alone, not a table row each (thousands for a
  popular tag).

Per engine (DIALECTS holds each engine's (name, CREATE, DROP) triples):

- PostgreSQL: the first is a partial index (``WHERE privacy = 'public'``); the others
  carry image_id as an ``INCLUDE`` column, outside the key, so the key stays small. Built
  and dropped ``CONCURRENTLY``, so a live gallery keeps writing while they build: the
  migration runs outside a transaction (``atomic = False``); a build that fails part-way
  leaves an invalid index that ``invoke db.check`` names, to drop before running it again.
- SQLite: the same partial index; covering indexes are composite (SQLite has no
  ``INCLUDE``). A build holds the write lock while it reads the table: about a second
  per 100,000 images here.
- MySQL/MariaDB have no partial indexes: ``images_public_newest`` leads with privacy
  instead, ``(privacy, uploaded_at DESC, id)``, and its public part is one range of it.
  An InnoDB secondary index already carries the primary key's columns, so image_tags'
  own ``image_tags_tag_id`` covers ``Image.tagged`` there and is not doubled. Nor do
  likes get an index: MariaDB sorts ``Image.liked_by``'s rows in a temporary table
  whatever the index (its order runs over two tables), so one would change no plan. Built
  in place
  without locking writes (``ALGORITHM=INPLACE, LOCK=NONE``: the server refuses at once
  rather than copy the table).

``down`` drops what ``up`` created, in reverse order.
"""

# lint: allow sqlite-create-index: about a second per 100,000 images, once; writers wait

import peewee as pw

# Outside a transaction: PostgreSQL builds an index CONCURRENTLY only there.
atomic = False

PUBLIC = "privacy = 'public'"


def postgres_indexes():
    """Return [(name, CREATE, DROP)] for PostgreSQL: partial and INCLUDE indexes, online."""
    return [
        _postgres("images_public_newest", "images (uploaded_at DESC, id)", f" WHERE {PUBLIC}"),
        _postgres(
            "user_likes_user_newest", "user_likes (user_id, liked_at DESC) INCLUDE (image_id)"
        ),
        _postgres("image_tags_tag_image", "image_tags (tag_id) INCLUDE (image_id)"),
    ]


def _postgres(name, target, where=""):
    return (
        name,
        f"CREATE INDEX CONCURRENTLY {name} ON {target}{where}",
        f"DROP INDEX CONCURRENTLY {name}",
    )


def sqlite_indexes():
    """Return [(name, CREATE, DROP)] for SQLite: the partial index, covering composites."""
    return [
        _sqlite("images_public_newest", "images (uploaded_at DESC, id)", f" WHERE {PUBLIC}"),
        _sqlite("user_likes_user_newest", "user_likes (user_id, liked_at DESC, image_id)"),
        _sqlite("image_tags_tag_image", "image_tags (tag_id, image_id)"),
    ]


def _sqlite(name, target, where=""):
    return (name, f"CREATE INDEX {name} ON {target}{where}", f"DROP INDEX {name}")


def mysql_indexes():
    """Return [(name, CREATE, DROP)] for MySQL/MariaDB: composites, built in place."""
    return [
        _mysql("images_public_newest", "images", "privacy, uploaded_at DESC, id"),
    ]


def _mysql(name, table, columns):
    online = "ALGORITHM=INPLACE LOCK=NONE"
    return (
        name,
        f"CREATE INDEX {name} ON {table} ({columns}) {online}",
        f"ALTER TABLE {table} DROP INDEX {name}, {online.replace(' ', ', ')}",
    )


# dialect -> the function returning its indexes
DIALECTS = {
    "sqlite": sqlite_indexes,
    "postgres": postgres_indexes,
    "mysql": mysql_indexes,
}


def up(migrator, db):
    indexes = DIALECTS[_dialect(db)]()
    migrator.migrate(*(migrator.sql(create) for _, create, _ in indexes))


def down(migrator, db):
    indexes = DIALECTS[_dialect(db)]()
    migrator.migrate(*(migrator.sql(drop) for _, _, drop in reversed(indexes)))


def _dialect(db):
    """Return the DIALECTS key for db, or refuse an engine without indexes written yet."""
    if isinstance(db, pw.SqliteDatabase):
        return "sqlite"
    if isinstance(db, pw.PostgresqlDatabase):
        return "postgres"
    if isinstance(db, pw.MySQLDatabase):
        return "mysql"
    raise NotImplementedError(
        f"006_partial_and_covering_indexes has no indexes for {type(db).__name__} yet "
        f"(written so far: {', '.join(DIALECTS)}); add its statements to DIALECTS "
        "in migrations/006_partial_and_covering_indexes.py"
    )
