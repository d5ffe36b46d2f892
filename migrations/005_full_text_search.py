"""Index an image's words for full-text search, and tag names for autocomplete.

An image's *document* is its title, caption, tag names and AI prompt, joined by spaces.
Every engine keeps it in one side table, ``image_search`` (a row per image, removed with
its image by ON DELETE CASCADE), and triggers rewrite an image's row whenever one of
its parts changes:

    images              insert; update of title or caption
    image_tags          insert, delete, update (a tag added to or taken off an image)
    tags                update of name (every image carrying it); MySQL: delete too
    ai_generation_meta  insert, delete, update of prompt

A rewrite deletes the image's row and inserts it again from the tables, so a rewrite for
an image that is gone (a cascade in progress) leaves no row. ``up`` fills the table from
the rows already there (backfill); ``down`` drops everything it made, in reverse order.
Each engine indexes the document its own way (db/search.py asks each the same question:
every word typed is the start of a word of the document):

- SQLite: ``image_search_fts``, an FTS5 table whose content is ``image_search`` (external
  content: the text is stored once), kept by three triggers on ``image_search``, with
  prefix indexes of 2 and 3 characters for search as you type.
- PostgreSQL: ``image_search.vector``, a tsvector generated from the document with the
  ``simple`` configuration (no stemming, no stopwords: the same words as the other
  engines), GIN-indexed. The trigger functions are SECURITY DEFINER with a fixed
  search_path, like 004's, and ``image_search`` shows a row only to who may see its image.
- MySQL/MariaDB: a FULLTEXT index on ``image_search.document``. InnoDB skips words
  shorter than ``innodb_ft_min_token_size`` (3) and its stopwords ("a", "or", "the"...),
  so the document stores each word behind the marker ``zz`` ("a" is kept as "zza") and
  queries add it too: every word is then indexed, as on the other engines. A server
  whose ``innodb_ft_min_token_size`` is above 3 still misses one-letter words.
  GROUP_CONCAT stops at ``group_concat_max_len`` (1024 bytes by default): tags past
  that many characters on one image are not searchable there.

Tag autocomplete reads an index on the lower-cased name: SQLite ``tags_name_lower``
(an expression index, read by a range), PostgreSQL ``tags_name_prefix`` (text_pattern_ops,
which LIKE 'abc%' uses whatever the collation). MySQL's unique index on tags.name serves
LIKE 'abc%' already, its collation ignoring case.
"""

# lint: allow sqlite-create-index: tags holds one row per tag name, indexed in moments, once

import peewee as pw

SEARCH_TABLE = "image_search"
FTS_TABLE = "image_search_fts"  # SQLite
MARKER = "zz"  # MySQL: put before every word, so that short words and stopwords are indexed
# PostgreSQL's GIN index, built once over the backfilled rows rather than row by row as
# they are filled. The triggers come before the backfill, so that an image written
# meanwhile waits for the migration's locks.
BUILT_AFTER_BACKFILL = "image_search_vector"


# -- the document, per dialect ---------------------------------------------------------


def sqlite_document(image):
    """Return SQLite's expression of the document of ``image`` (an images row alias)."""
    tags = (
        "(SELECT group_concat(t.name, ' ') FROM image_tags it JOIN tags t ON t.id = it.tag_id "
        f"WHERE it.image_id = {image}.id)"
    )
    prompt = f"(SELECT m.prompt FROM ai_generation_meta m WHERE m.image_id = {image}.id)"
    parts = (f"{image}.title", f"{image}.caption", tags, prompt)
    return " || ' ' || ".join(f"coalesce({part}, '')" for part in parts)


def postgres_document(image):
    """Return PostgreSQL's expression of the document of ``image``."""
    tags = (
        "(SELECT string_agg(t.name, ' ') FROM image_tags it JOIN tags t ON t.id = it.tag_id "
        f"WHERE it.image_id = {image}.id)"
    )
    prompt = f"(SELECT m.prompt FROM ai_generation_meta m WHERE m.image_id = {image}.id)"
    return f"concat_ws(' ', {image}.title, {image}.caption, {tags}, {prompt})"


def mysql_document(image, without_tag=None):
    """Return MySQL's expression of the (marked) document of ``image``; ``without_tag``
    leaves out a tag about to be deleted (MySQL fires no trigger for its cascade)."""
    skip = f" AND t.id <> {without_tag}" if without_tag else ""
    tags = (
        "(SELECT GROUP_CONCAT(t.name SEPARATOR ' ') FROM image_tags it "
        f"JOIN tags t ON t.id = it.tag_id WHERE it.image_id = {image}.id{skip})"
    )
    prompt = f"(SELECT m.prompt FROM ai_generation_meta m WHERE m.image_id = {image}.id)"
    text = f"LOWER(CONCAT_WS(' ', {image}.title, {image}.caption, {tags}, {prompt}))"
    # Words are runs of letters and digits, as db/search.py splits what is typed.
    words = f"REGEXP_REPLACE({text}, '[^\\\\p{{L}}\\\\p{{N}}]+', ' ')"
    return f"REGEXP_REPLACE({words}, '[\\\\p{{L}}\\\\p{{N}}]+', '{MARKER}\\\\0')"


def rewrite(document, ids, **options):
    """Return the statements that rewrite the search rows of the images whose id is
    ``ids`` (an SQL condition such as ``= NEW.image_id``)."""
    return (
        f"DELETE FROM {SEARCH_TABLE} WHERE image_id {ids}; "
        f"INSERT INTO {SEARCH_TABLE} (image_id, document) "
        f"SELECT i.id, {document('i', **options)} FROM images i WHERE i.id {ids};"
    )


def backfill(document):
    """Return [the INSERT that fills the search table from the rows already there],
    oldest first: on SQLite a row's id then follows upload time, the order db/search.py
    lists a common word's matches in."""
    return [
        f"INSERT INTO {SEARCH_TABLE} (image_id, document) "
        f"SELECT i.id, {document('i')} FROM images i ORDER BY i.uploaded_at, i.id"
    ]


# (trigger name, table, event as written after AFTER, ids to rewrite), shared by SQLite and
# PostgreSQL, frozen. "UPDATE OF a, b" is narrowed to real changes by each dialect.
REWRITES = (
    ("images_search_after_insert", "images", "INSERT", "= NEW.id"),
    ("images_search_after_update", "images", "UPDATE OF title, caption", "= NEW.id"),
    ("image_tags_search_after_insert", "image_tags", "INSERT", "= NEW.image_id"),
    ("image_tags_search_after_delete", "image_tags", "DELETE", "= OLD.image_id"),
    ("image_tags_search_after_update", "image_tags", "UPDATE", "IN (OLD.image_id, NEW.image_id)"),
    (
        "tags_search_after_update",
        "tags",
        "UPDATE OF name",
        "IN (SELECT image_id FROM image_tags WHERE tag_id = NEW.id)",
    ),
    ("ai_generation_meta_search_after_insert", "ai_generation_meta", "INSERT", "= NEW.image_id"),
    ("ai_generation_meta_search_after_delete", "ai_generation_meta", "DELETE", "= OLD.image_id"),
    (
        "ai_generation_meta_search_after_update",
        "ai_generation_meta",
        "UPDATE OF prompt",
        "IN (OLD.image_id, NEW.image_id)",
    ),
)


def _changed(event):
    """Return the condition under which an UPDATE OF columns changed one of them."""
    columns = event.removeprefix("UPDATE OF ").split(", ") if event.startswith("UPDATE OF") else ()
    return " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns)


# -- SQLite ------------------------------------------------------------------------------


def sqlite_statements():
    """Return [(name, CREATE, DROP)] for SQLite."""
    statements = [
        (
            SEARCH_TABLE,
            f"CREATE TABLE {SEARCH_TABLE} (id INTEGER PRIMARY KEY, "
            "image_id VARCHAR(64) NOT NULL UNIQUE REFERENCES images (id) ON DELETE CASCADE, "
            "document TEXT NOT NULL)",
            f"DROP TABLE {SEARCH_TABLE}",
        ),
        (
            FTS_TABLE,
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(document, content='{SEARCH_TABLE}', "
            "content_rowid='id', prefix='2 3')",
            f"DROP TABLE {FTS_TABLE}",
        ),
    ]
    forget = (
        f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, document) "
        "VALUES ('delete', OLD.id, OLD.document);"
    )
    learn = f"INSERT INTO {FTS_TABLE} (rowid, document) VALUES (NEW.id, NEW.document);"
    for event, body in (("insert", learn), ("delete", forget), ("update", forget + " " + learn)):
        name = f"{SEARCH_TABLE}_after_{event}"
        statements.append(
            (
                name,
                f"CREATE TRIGGER {name} AFTER {event.upper()} ON {SEARCH_TABLE} "
                f"FOR EACH ROW BEGIN {body} END",
                f"DROP TRIGGER {name}",
            )
        )
    for name, table, event, ids in REWRITES:
        changed = _changed(event).replace("IS DISTINCT FROM", "IS NOT")  # SQLite's words
        when = f" WHEN {changed}" if changed else ""
        statements.append(
            (
                name,
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW{when} "
                f"BEGIN {rewrite(sqlite_document, ids)} END",
                f"DROP TRIGGER {name}",
            )
        )
    statements.append(
        (
            "tags_name_lower",
            "CREATE INDEX tags_name_lower ON tags (lower(name))",
            "DROP INDEX tags_name_lower",
        )
    )
    return statements, backfill(sqlite_document)


# -- PostgreSQL --------------------------------------------------------------------------


def postgres_statements(schema):
    """Return [(name, CREATE, DROP)] for PostgreSQL: each trigger after its function."""
    words = "regexp_replace(document, '[^[:alnum:]]+', ' ', 'g')"
    statements = [
        (
            SEARCH_TABLE,
            f"CREATE TABLE {SEARCH_TABLE} (image_id VARCHAR(64) PRIMARY KEY "
            "REFERENCES images (id) ON DELETE CASCADE, document TEXT NOT NULL, "
            f"vector tsvector GENERATED ALWAYS AS (to_tsvector('simple', {words})) STORED)",
            f"DROP TABLE {SEARCH_TABLE}",
        ),
        (
            "image_search row-level security",
            f"ALTER TABLE {SEARCH_TABLE} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {SEARCH_TABLE} DISABLE ROW LEVEL SECURITY",
        ),
        (
            "image_search_of_visible_rows",
            f"CREATE POLICY image_search_of_visible_rows ON {SEARCH_TABLE} FOR SELECT "
            f"USING (EXISTS (SELECT FROM images WHERE images.id = {SEARCH_TABLE}.image_id))",
            f"DROP POLICY image_search_of_visible_rows ON {SEARCH_TABLE}",
        ),
    ]
    for name, table, event, ids in REWRITES:
        when = f" WHEN ({_changed(event)})" if "OF" in event else ""
        statements.append(
            (
                f"{name}()",
                # SECURITY DEFINER: the app's role may not see (or write) the search rows of
                # images it cannot see, which a rename of a tag rewrites too.
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                f"SECURITY DEFINER SET search_path = {schema}, pg_temp "
                f"AS $$ BEGIN {rewrite(postgres_document, ids)} RETURN NULL; END $$",
                f"DROP FUNCTION {name}()",
            )
        )
        statements.append(
            (
                name,
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW{when} "
                f"EXECUTE FUNCTION {name}()",
                f"DROP TRIGGER {name} ON {table}",
            )
        )
    statements.append(
        (
            "tags_name_prefix",
            "CREATE INDEX tags_name_prefix ON tags (lower(name) text_pattern_ops)",
            "DROP INDEX tags_name_prefix",
        )
    )
    statements.append(
        (
            BUILT_AFTER_BACKFILL,
            f"CREATE INDEX {BUILT_AFTER_BACKFILL} ON {SEARCH_TABLE} USING GIN (vector)",
            f"DROP INDEX {BUILT_AFTER_BACKFILL}",
        )
    )
    # The backfill's plan joins each image to its tags: with the statistics of an
    # emptier gallery (a bulk load autovacuum has not analysed yet), the planner reads
    # every tag per image (1,000,000 images: over 10 minutes instead of about one). An
    # empty gallery is left unanalysed: statistics of no rows would outlive the first
    # rows written, as the planner's guide, until autovacuum came by.
    analyse = (
        "DO $$ BEGIN IF EXISTS (SELECT FROM images) THEN "
        "ANALYZE images, image_tags, tags, ai_generation_meta; END IF; END $$"
    )
    return statements, [analyse, *backfill(postgres_document)]


# -- MySQL / MariaDB ---------------------------------------------------------------------


def mysql_statements():
    """Return [(name, CREATE, DROP)] for MySQL and MariaDB."""
    statements = [
        (
            SEARCH_TABLE,
            f"CREATE TABLE {SEARCH_TABLE} (image_id VARCHAR(64) NOT NULL PRIMARY KEY, "
            "document TEXT NOT NULL, FOREIGN KEY (image_id) REFERENCES images (id) "
            "ON DELETE CASCADE) ENGINE=InnoDB",
            f"DROP TABLE {SEARCH_TABLE}",
        ),
        (
            "image_search_document",
            f"CREATE FULLTEXT INDEX image_search_document ON {SEARCH_TABLE} (document)",
            f"DROP INDEX image_search_document ON {SEARCH_TABLE}",
        ),
    ]
    for name, table, event, ids in REWRITES:
        body = rewrite(mysql_document, ids)
        if "OF" in event:  # no UPDATE OF on MySQL: test the columns in the body
            columns = event.removeprefix("UPDATE OF ").split(", ")
            changed = " OR ".join(f"NOT (OLD.{c} <=> NEW.{c})" for c in columns)
            body, event = f"IF {changed} THEN {body} END IF;", "UPDATE"
        statements.append(
            (
                name,
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN {body} END",
                f"DROP TRIGGER {name}",
            )
        )
    # MySQL fires no trigger for the image_tags rows a deleted tag takes along: rewrite
    # its images without it, before it goes. (A deleted image takes its search row along.)
    name = "tags_search_before_delete"
    ids = "IN (SELECT image_id FROM image_tags WHERE tag_id = OLD.id)"
    body = rewrite(mysql_document, ids, without_tag="OLD.id")
    statements.append(
        (
            name,
            f"CREATE TRIGGER {name} BEFORE DELETE ON tags FOR EACH ROW BEGIN {body} END",
            f"DROP TRIGGER {name}",
        )
    )
    return statements, backfill(mysql_document)


def _statements(db):
    """Return (the [(name, CREATE, DROP)] of db's engine, its backfill's statements)."""
    if isinstance(db, pw.SqliteDatabase):
        return sqlite_statements()
    if isinstance(db, pw.PostgresqlDatabase):
        schema = db.execute_sql("SELECT quote_ident(current_schema())").fetchone()[0]
        return postgres_statements(schema)
    if isinstance(db, pw.MySQLDatabase):
        return mysql_statements()
    raise NotImplementedError(
        f"005_full_text_search has no search index for {type(db).__name__} yet; "
        "add its statements to migrations/005_full_text_search.py"
    )


def up(migrator, db):
    statements, fill = _statements(db)
    creates = [create for name, create, _ in statements if name != BUILT_AFTER_BACKFILL]
    after = [create for name, create, _ in statements if name == BUILT_AFTER_BACKFILL]
    migrator.migrate(*(migrator.sql(statement) for statement in [*creates, *fill, *after]))


def down(migrator, db):
    statements, _ = _statements(db)
    migrator.migrate(*(migrator.sql(drop) for _, _, drop in reversed(statements)))
