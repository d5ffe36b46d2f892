"""Full-text search of images and tag autocomplete, on the indexes of migration 005.

    ranked = search.matching_images(Image.visible_to(viewer), Image, "misty harbour")
    names = search.tags_starting(Tag.select(), Tag, "lan")   # landscape, lanterns...

What is typed is only ever words: runs of letters and digits (``words_of``), lower-cased.
Everything else, quotes, ``%``, ``_`` and each engine's query syntax (FTS5's ``"``,
``*``, ``NEAR(``, ``AND``/``OR``/``NOT`` as operators; tsquery's ``& | ! : * ( )``; MySQL's
boolean ``+ - < > ( ) ~ * " @``) separates words and means nothing more; ``AND`` is a
word to find, not an operator. The query is then built from those words alone, so no
text typed reaches the engine's query parser as syntax.

An image matches when each word typed starts a word of its document (title, caption,
tags, AI prompt): "sun harb" finds "Sunset over the harbour". Text without a word
(empty, blank, only punctuation) matches nothing. Matches come best first by the
engine's own relevance (FTS5's bm25, PostgreSQL's ts_rank, InnoDB's score), then newest
first. The three engines find the same images; their scores, and so the order of
matches, differ. Accents: SQLite and MySQL's default collations fold them ("cafe" finds
"café"), PostgreSQL's ``simple`` configuration does not.

A tag matches autocomplete when its name starts with the text typed, case-insensitively,
as typed (``%`` and ``_`` are plain characters); the most used tags come first.

Each engine's query is built by its own ``Searcher`` (chosen by ``searcher_for``, a
singledispatch on the engine's class, like db/explain.py's planners).
"""

import functools
import re

import peewee as pw

from db.engines import MySQLEngine, PostgresEngine, SqliteEngine, engine_for

WORD = re.compile(r"[^\W_]+")  # letters and digits, in any script
MYSQL_MARKER = "zz"  # migration 005 stores every word behind it on MySQL

SEARCH = pw.Table("image_search", ("id", "image_id", "document", "vector"))
FTS = pw.Table("image_search_fts", ("rowid", "document", "rank"))

# What migration 005 derives from the gallery's rows, declared here once for every tool
# that must tell it from the models' schema. Its rows are the triggers' work, never data
# of their own: db.transfer and db.populate leave them to the target's triggers, db.check
# and db.diagram leave them out of the models' comparison, db.reset empties them with
# the rest, db.stats shows them marked "derived".
DERIVED_TABLES = frozenset({SEARCH.__name__, FTS.__name__})
# FTS5 keeps the index in shadow tables named after its virtual table (_data, _idx,
# _docsize, _config, _content...), made and dropped with it.
DERIVED_TABLE_PREFIXES = (f"{FTS.__name__}_",)
# The indexes 005 puts on the models' tables for autocomplete, which the models cannot
# declare on every engine (an expression; text_pattern_ops is PostgreSQL's alone).
DERIVED_INDEXES = frozenset({"tags_name_lower", "tags_name_prefix"})


# The triggers that keep them: each named after its table and "search" (image_search's
# own feed FTS5; the others rewrite an image's row when one of its parts changes).
DERIVED_TRIGGER = re.compile(r"^\w+?_search_(after|before)_(insert|update|delete)$")


def is_derived_trigger(name):
    """Return whether the trigger ``name`` is one of those keeping the search tables."""
    return DERIVED_TRIGGER.match(name) is not None


def is_derived(table):
    """Return whether ``table`` is one of migration 005's derived search tables."""
    return table in DERIVED_TABLES or table.startswith(DERIVED_TABLE_PREFIXES)


def words_of(text):
    """Return the words of ``text`` as the search indexes split them, lower-cased."""
    return WORD.findall((text or "").lower())


def matching_images(query, image, text):
    """Return ``query`` (of ``image``, the Image model) narrowed to the images whose
    document holds every word of ``text`` as the start of a word, best match first."""
    words = words_of(text)
    if not words:
        return query.where(pw.SQL("1 = 0"))  # nothing to look for: nothing found
    searcher = searcher_for(engine_for(_database(image)))
    return searcher.narrow(query, image, words).order_by(
        searcher.best_first(words), image.uploaded_at.desc(), image.id
    )


def tags_starting(query, tag, prefix, limit=10):
    """Return ``query`` (of ``tag``, the Tag model) narrowed to the tags whose name starts
    with ``prefix``, case-insensitively, most used first, at most ``limit``."""
    prefix = (prefix or "").lower()
    if not prefix.strip():
        return query.where(pw.SQL("1 = 0"))
    searcher = searcher_for(engine_for(_database(tag)))
    return (
        query.where(searcher.name_starts(tag, prefix))
        .order_by(tag.count.desc(), tag.name)
        .limit(limit)
    )


def _database(model):
    database = model._meta.database
    return getattr(database, "obj", database)  # the models are bound through a proxy


def _like_prefix(prefix):
    """Return the LIKE pattern for ``prefix`` as typed: its ``\\``, ``%`` and ``_`` escaped."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class Searcher:
    """How one engine matches words against the search index and ranks the matches."""

    def narrow(self, query, image, words):
        """Return ``query`` joined to the index and filtered to the matching images."""
        raise NotImplementedError

    def best_first(self, words):
        """Return the ORDER BY term that puts the best match first."""
        raise NotImplementedError

    def name_starts(self, tag, prefix):
        """Return the condition that a tag's lower-cased name starts with ``prefix``."""
        raise NotImplementedError


class SqliteSearcher(Searcher):
    """FTS5: every word a quoted prefix term, implicitly ANDed; ranked by bm25."""

    def narrow(self, query, image, words):
        match = " ".join(f'"{word}"*' for word in words)  # a word holds no '"'
        return (
            query.join(SEARCH, on=(SEARCH.image_id == image.id))
            .join(FTS, on=(FTS.rowid == SEARCH.id))
            .where(pw.Expression(FTS.document, "MATCH", match))
        )

    def best_first(self, words):
        return FTS.rank  # bm25: lower is better

    def name_starts(self, tag, prefix):
        # A range over the index on lower(name): SQLite uses no index for LIKE on an
        # expression. Code points order as UTF-8 bytes do, so the range is the prefix's.
        following = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        lowered = pw.fn.lower(tag.name)
        return (lowered >= prefix) & (lowered < following)


class PostgresSearcher(Searcher):
    """tsquery: every word a prefix lexeme (``word:*``), ANDed; ranked by ts_rank.

    The matches are found first, on the GIN index alone, and ranked there (a materialized
    CTE): left to choose, the planner expects few rows of a prefix query and reads the
    whole search table in rank order, so a word no image has cost a full scan. The
    tsquery is a constant (a cast, not ``to_tsquery()``, which is evaluated per row); its
    words are letters and digits only, lower-cased, as ``simple`` would make them."""

    MATCHES = "search_matches"

    def _matches(self, words):
        tsquery = pw.Cast(" & ".join(f"'{word}':*" for word in words), "tsquery")
        matches = SEARCH.select(
            SEARCH.image_id,
            # Normalization 1 divides by the document's log length, as bm25 favours the
            # shorter ones: a word in a title and three tags beats it in a long prompt.
            pw.fn.ts_rank(SEARCH.vector, tsquery, 1).alias("rank"),
        ).where(pw.Expression(SEARCH.vector, "@@", tsquery))
        return matches.cte(self.MATCHES, materialized=True, columns=("image_id", "rank"))

    def narrow(self, query, image, words):
        matches = self._matches(words)
        return query.with_cte(matches).join(matches, on=(matches.c.image_id == image.id))

    def best_first(self, words):
        return pw.Entity(self.MATCHES, "rank").desc()

    def name_starts(self, tag, prefix):
        # LIKE with a constant prefix reads the text_pattern_ops index tags_name_prefix.
        return pw.Expression(pw.fn.lower(tag.name), "LIKE", _like_prefix(prefix))


class MySQLSearcher(Searcher):
    """Boolean mode: every word required (``+``) as a prefix (``*``), behind the marker
    migration 005 puts before each stored word; ranked by InnoDB's relevance."""

    def _match(self, words):
        against = " ".join(f"+{MYSQL_MARKER}{word}*" for word in words)
        return pw.NodeList(
            (
                pw.SQL("MATCH"),
                pw.EnclosedNodeList([SEARCH.document]),
                pw.SQL("AGAINST"),
                pw.EnclosedNodeList([pw.NodeList((pw.Value(against), pw.SQL("IN BOOLEAN MODE")))]),
            )
        )

    def narrow(self, query, image, words):
        return query.join(SEARCH, on=(SEARCH.image_id == image.id)).where(self._match(words))

    def best_first(self, words):
        return pw.NodeList((self._match(words), pw.SQL("DESC")))

    def name_starts(self, tag, prefix):
        # The unique index on name serves LIKE 'abc%'; the collation ignores case. (peewee
        # writes its LIKE as LIKE BINARY there, which no index of that collation serves.)
        return pw.Expression(tag.name, pw.OP.ILIKE, _like_prefix(prefix))


@functools.singledispatch
def searcher_for(engine):
    """Return the Searcher that queries ``engine``'s search index."""
    raise TypeError(f"db.search has no searcher for {engine.name}")


@searcher_for.register
def _(engine: SqliteEngine):
    return SqliteSearcher()


@searcher_for.register
def _(engine: PostgresEngine):
    return PostgresSearcher()


@searcher_for.register
def _(engine: MySQLEngine):
    return MySQLSearcher()
