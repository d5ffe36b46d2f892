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
(empty, blank, only punctuation) matches nothing. When at most ``RANKED`` images
match, they come best first by the engine's own relevance (FTS5's bm25, PostgreSQL's
ts_rank, InnoDB's score), then newest first; when more do, newest first, and a page then
reads only its own rows (each Searcher says how it counts, and what "newest" is). The
three engines find the same images; their scores, and so the order of matches, differ.
Accents: SQLite and MySQL's default collations fold them ("cafe" finds "café"),
PostgreSQL's ``simple`` configuration does not.

A tag matches autocomplete when its name starts with the text typed, case-insensitively,
as typed (``%`` and ``_`` are plain characters); the most used tags come first.

Each engine's query is built by its own ``Searcher`` (chosen by ``searcher_for``, a
singledispatch on the engine's class, like db/explain.py's planners).
"""

import functools
import operator
import re

import peewee as pw

from db.engines import MySQLEngine, PostgresEngine, SqliteEngine, engine_for

WORD = re.compile(r"[^\W_]+")  # letters and digits, in any script
MYSQL_MARKER = "zz"  # migration 005 stores every word behind it on MySQL
# A search ranks its matches when at most this many images match; more come newest
# first, as ranking them would read every one: a word a third of the gallery holds then
# costs its page, as a rare one costs its matches.
RANKED = 1_000

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
    """Return the images of ``query`` (of ``image``, the Image model) whose document holds
    every word of ``text`` as the start of a word, best match first (see the module's
    docstring for how many are ranked)."""
    words = words_of(text)
    if not words:
        return query.where(pw.SQL("1 = 0"))  # nothing to look for: nothing found
    database = _database(image)
    return searcher_for(engine_for(database)).search(database, query, image, words)


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
    """How one engine finds the images matching words, ranked or newest first."""

    def search(self, database, query, image, words):
        """Return the images of ``query`` matching ``words``: best first when at most
        ``RANKED`` match, else newest first."""
        if self.held_by_many(database, words):
            return self.newest_first(query, image, words)
        return self.best_first(query, image, words)

    def best_first(self, query, image, words):
        """Return ``query`` narrowed to the matches, best first, equals newest first."""
        return self.ranked(query, image, words).order_by_extend(image.uploaded_at.desc(), image.id)

    def held_by_many(self, database, words):
        """Return whether more than ``RANKED`` images match ``words``."""
        raise NotImplementedError

    def ranked(self, query, image, words):
        """Return ``query`` narrowed to the matches, ordered by relevance alone."""
        raise NotImplementedError

    def newest_first(self, query, image, words):
        """Return ``query`` narrowed to the matches, newest first, reading only as many
        as the page asks for."""
        raise NotImplementedError

    def name_starts(self, tag, prefix):
        """Return the condition that a tag's lower-cased name starts with ``prefix``."""
        raise NotImplementedError


def _count_up_to(database, query, cap):
    """Return how many rows ``query`` has, counting no further than ``cap``."""
    return query.limit(cap).bind(database).count()


class SqliteSearcher(Searcher):
    """FTS5: every word a quoted prefix term, implicitly ANDed; ranked by bm25.

    FTS5 walks a word's matches in rowid order, newest first when asked: a common
    word's page costs the page. "Newest" is the most recently indexed here: the search
    row of an image is written again when its title, caption, tags or prompt change."""

    def _match(self, words):
        match = " ".join(f'"{word}"*' for word in words)  # a word holds no '"'
        return pw.Expression(FTS.document, "MATCH", match)

    def held_by_many(self, database, words):
        matches = FTS.select(FTS.rowid).where(self._match(words))
        return _count_up_to(database, matches, RANKED + 1) > RANKED

    def _narrow(self, query, image, words):
        return (
            query.join(SEARCH, on=(SEARCH.image_id == image.id))
            .join(FTS, on=(FTS.rowid == SEARCH.id))
            .where(self._match(words))
        )

    def ranked(self, query, image, words):
        return self._narrow(query, image, words).order_by(FTS.rank)  # bm25: lower is better

    def newest_first(self, query, image, words):
        return self._narrow(query, image, words).order_by(FTS.rowid.desc())

    def name_starts(self, tag, prefix):
        # A range over the index on lower(name): SQLite uses no index for LIKE on an
        # expression. Code points order as UTF-8 bytes do, so the range is the prefix's.
        following = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        lowered = pw.fn.lower(tag.name)
        return (lowered >= prefix) & (lowered < following)


class PostgresSearcher(Searcher):
    """tsquery: every word a prefix lexeme (``word:*``), ANDed; ranked by ts_rank.

    The tsquery is a constant (a cast, not ``to_tsquery()``, which is evaluated per row);
    its words are letters and digits only, lower-cased, as ``simple`` would make them.
    Few matches are found on the GIN index first, and ranked there (a materialized
    CTE): left to choose, the planner expects few rows of a prefix query and reads the
    whole search table in rank order. Many are read walking the images newest first."""

    MATCHES = "search_matches"

    def _tsquery(self, words):
        return pw.Cast(" & ".join(f"'{word}':*" for word in words), "tsquery")

    def _matching(self, words):
        return pw.Expression(SEARCH.vector, "@@", self._tsquery(words))

    def held_by_many(self, database, words):
        matches = SEARCH.select(SEARCH.image_id).where(self._matching(words))
        return _count_up_to(database, matches, RANKED + 1) > RANKED

    def ranked(self, query, image, words):
        matches = SEARCH.select(
            SEARCH.image_id,
            # Normalization 1 divides by the document's log length, as bm25 favours the
            # shorter ones: a word in a title and three tags beats it in a long prompt.
            pw.fn.ts_rank(SEARCH.vector, self._tsquery(words), 1).alias("rank"),
        ).where(self._matching(words))
        cte = matches.cte(self.MATCHES, materialized=True, columns=("image_id", "rank"))
        return (
            query.with_cte(cte)
            .join(cte, on=(cte.c.image_id == image.id))
            .order_by(cte.c.rank.desc())
        )

    def newest_first(self, query, image, words):
        # visible_to's order. @@'s function, ts_match_vq, which no index serves: the
        # planner, which expects few matches of prefix words, would otherwise read them
        # all on the GIN index and sort them; it walks the images newest first instead.
        matching = pw.fn.ts_match_vq(SEARCH.vector, self._tsquery(words))
        return query.join(SEARCH, on=(SEARCH.image_id == image.id)).where(matching)

    def name_starts(self, tag, prefix):
        # LIKE with a constant prefix reads the text_pattern_ops index tags_name_prefix.
        return pw.Expression(pw.fn.lower(tag.name), "LIKE", _like_prefix(prefix))


class MySQLSearcher(Searcher):
    """Boolean mode: every word required (``+``) as a prefix (``*``), behind the marker
    migration 005 puts before each stored word; ranked by InnoDB's relevance.

    InnoDB reads every match of each word before it returns one (about 20 µs a match:
    3 s for a word a third of a million images hold), so a common word is not looked up
    there: a word is common when more than ``RANKED`` images are likely to have it,
    going by the newest ``SAMPLE`` images. Common words are tested on the text (LIKE),
    on the matches of the rare ones (ranked by those), or, every word common, walking
    the images newest first."""

    SAMPLE = 2_000

    def search(self, database, query, image, words):
        common = self._common_words(database, image, words)
        if len(common) == len(words):
            return self.newest_first(query, image, words)
        if common:  # tested on the few matches of the rare words
            query = query.where(self._holds_every(common))
        rare = [word for word in words if word not in common]
        return self.best_first(query, image, rare)

    def _common_words(self, database, image, words):
        """Return those of ``words`` likely to start a word of more than ``RANKED``
        images, going by how many of the newest ``SAMPLE`` images have one."""
        newest = image.select(image.id).order_by(image.uploaded_at.desc()).limit(self.SAMPLE)
        sample = newest.alias("newest")
        holding = [pw.fn.SUM(pw.Case(None, [(self._holds_every([word]), 1)], 0)) for word in words]
        sampled, *held = (
            SEARCH.select(pw.fn.COUNT(pw.SQL("*")), *holding)
            .from_(sample)
            .join(SEARCH, on=(SEARCH.image_id == sample.c.id))
            .bind(database)
            .tuples()
            .get()
        )
        if sampled < self.SAMPLE:  # the sample is the whole gallery: the counts are exact
            images = sampled
        else:
            images = max(sampled, self._estimated_rows(database))
        return {
            word
            for word, count in zip(words, held, strict=True)
            if (count or 0) * images > RANKED * max(sampled, 1)
        }

    def _estimated_rows(self, database):
        """Return InnoDB's estimate of the search table's rows (no count of them)."""
        cursor = database.execute_sql(
            "SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (SEARCH.__name__,),
        )
        row = cursor.fetchone()
        return int(row[0]) if row else 0

    def _holds_every(self, words):
        """Return the condition that an image's document has a word starting with each
        of ``words``, tested on the text: the marked document's words are single-spaced."""
        spaced = pw.fn.CONCAT(" ", SEARCH.document)
        return functools.reduce(
            operator.and_,
            (pw.Expression(spaced, pw.OP.ILIKE, f"% {MYSQL_MARKER}{word}%") for word in words),
        )

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

    def ranked(self, query, image, words):
        match = self._match(words)
        return (
            query.join(SEARCH, on=(SEARCH.image_id == image.id))
            .where(match)
            .order_by(pw.NodeList((match, pw.SQL("DESC"))))
        )

    def newest_first(self, query, image, words):
        # visible_to's order; the planner walks the newest-first index of the images.
        return query.join(SEARCH, on=(SEARCH.image_id == image.id)).where(self._holds_every(words))

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
