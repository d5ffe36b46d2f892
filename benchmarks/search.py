"""Benchmark search: full-text (migration 005, ``Image.search``) against the LIKE scan it
replaced, and the app's typical queries before and after migration 006's indexes.

    python benchmarks/search.py                        # 1,000,000 images, every engine
    python benchmarks/search.py --engines sqlite --images 200000 --searches 500
    nox -s bench -- search --images 100000

For each engine, a fresh database is migrated up to 004, populated (db.populate), then
migrated to 005, whose backfill indexes every image at once (timed: what adopting search
costs a live gallery), and analysed. Then, in the same run:

1. before 006: the app's typical queries (db.explain's built-in ones and the first page
   of the pages 006 serves), each timed ``--repeats`` times (median), and the LIKE scan;
2. migration 006 applied, the tables analysed again;
3. after 006: the same queries again, the LIKE scan again, and full-text search.

A search is the first page (20 images, what the gallery shows) an anonymous visitor gets
for what they typed. Three kinds, ``--searches`` of each: a common word, drawn
(``--seed``) from the populated titles (one image in ~30 has it, as db.populate's
vocabulary is small), skipping the short and stop words the full-text indexes leave out;
two such words (fewer matches); and a word no image has (a name the gallery does not
know: what a LIKE scan reads whole). Each is searched both ways in turn, so both sides
see the same cache. The baseline is the search of before 005:
``title LIKE '%w%' OR caption LIKE '%w%'`` among the visible images, newest first.

Printed side by side: p50 and p99 in ms and LIKE/full-text (how many times faster
full-text is); per query, before/after 006. Target: full-text's p99 no slower than the
LIKE scan's. Exit status 1 when it is missed (not with ``--smoke``).
"""

import argparse
import functools
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from peewee import fn

from db.access import as_system
from db.engines import engine_for_url, open_database
from db.explain import builtin_queries
from db.models import Image, User, UserLike, bind_models
from db.populate import GalleryPlan, populate
from db.runner import Runner

PROJECT_DIR = Path(__file__).resolve().parents[1]
ENGINES = ("sqlite", "postgres", "mysql")
SERVERS = {
    "postgres": os.environ.get(
        "CLONEGALLERY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
    ),
    "mysql": os.environ.get("CLONEGALLERY_BENCH_MYSQL", "mysql://root@127.0.0.1:3306"),
}
BEFORE_SEARCH = "004"  # populated at 004: 005's backfill then indexes every image at once
BEFORE_INDEXES = "005"  # the version the database is migrated to before 006
PAGE = 20
TITLE_SAMPLE = 2_000
# Words the engines' full-text indexes drop (PostgreSQL's and InnoDB's stop words) or
# that are too short for them: nobody searches for them alone.
SKIPPED_WORDS = {"the", "after", "from", "above", "by", "up", "at", "in"}
MIN_WORD = 3
# Tables whose statistics change with 006's indexes; analysed after each migration step.
ANALYSED = ("images", "user_likes", "image_tags", "album_images", "tags")


def database_url(engine, folder):
    """Return the URL of the fresh database the benchmark fills on ``engine``."""
    if engine == "sqlite":
        return f"sqlite:///{Path(folder) / 'search.db'}"
    return f"{SERVERS[engine]}/cgbench_search_{os.getpid()}"


def analyse(database, engine):
    """Refresh the planner's statistics of the tables the searches and pages read."""
    if engine == "mysql":
        database.execute_sql(f"ANALYZE TABLE {', '.join(ANALYSED)}").fetchall()
    else:
        database.execute_sql("ANALYZE")


def drawn_words(database, count, seed):
    """Return ``count`` words drawn from a sample of the populated titles."""
    titles = [title for (title,) in Image.select(Image.title).limit(TITLE_SAMPLE).tuples()]
    words = sorted(
        {
            word
            for title in titles
            for word in re.findall(r"[a-z]+", title.lower())
            if len(word) >= MIN_WORD and word not in SKIPPED_WORDS
        }
    )
    return random.Random(seed).choices(words, k=count)


def search_texts(words, seed):
    """Return {kind: texts}: the common words, pairs of them, and words no image has."""
    rng = random.Random(seed)
    return {
        "one word": words,
        "two words": [f"{word} {rng.choice(words)}" for word in words],
        "no match": [f"{word}zq" for word in words],
    }


def like_scan(text):
    """Return the search of before 005: a LIKE scan of titles and captions, newest first
    (each word of ``text`` in one of them)."""
    query = Image.visible_to(None)
    for word in text.split():
        query = query.where(Image.title.contains(word) | Image.caption.contains(word))
    return query.limit(PAGE)


def full_text(word):
    """Return today's search: ``Image.search`` on migration 005's full-text index."""
    return Image.search(word, None).limit(PAGE)


def timed_ms(make_query):
    """Make the query (a search may count its matches first) and run it to its last row;
    return the milliseconds both took."""
    started = time.perf_counter()
    list(make_query().tuples())
    return (time.perf_counter() - started) * 1000


def time_searches(texts, sides):
    """Search each text of each kind with every side in turn; return {(side, kind): [ms]}."""
    times = {}
    for kind, kind_texts in texts.items():
        for text in kind_texts[:3]:  # warm the caches and the connection once
            for search in sides.values():
                timed_ms(functools.partial(search, text))
        for text in kind_texts:
            for name, search in sides.items():
                times.setdefault((name, kind), []).append(timed_ms(functools.partial(search, text)))
    return times


def typical_queries():
    """Return (name, query): db.explain's built-in queries and the first pages 006 serves."""
    liker = (
        User.select(User)
        .join(UserLike, on=(UserLike.user == User.id))
        .group_by(User.id)
        .order_by(fn.COUNT(UserLike.image).desc(), User.id)
        .first()
    )
    pages = [("newest public page", Image.visible_to(None).limit(PAGE))]
    if liker is not None:
        pages.append(("the most active liker's likes", Image.liked_by(liker, None).limit(PAGE)))
    return builtin_queries() + pages


def time_queries(queries, repeats):
    """Return {name: median ms over ``repeats`` runs} for each (name, query)."""
    return {
        name: statistics.median(timed_ms(query.clone) for _ in range(repeats))
        for name, query in queries
    }


def percentiles(times):
    """Return (p50, p99) of a list of milliseconds."""
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49], cuts[98]


def measure(engine, url, args):
    """Populate a fresh database on ``engine`` and time it before and after 006; return the
    figures."""
    database = open_database(url)
    try:
        runner = Runner(database, PROJECT_DIR / "migrations")
        runner.migrate(to=BEFORE_SEARCH)
        bind_models(database)
        populated = populate(database, GalleryPlan.sized(images=args.images, seed=args.seed))
        started = time.perf_counter()
        runner.migrate(to=BEFORE_INDEXES)
        backfill_seconds = time.perf_counter() - started
        analyse(database, engine)
        texts = search_texts(drawn_words(database, args.searches, args.seed), args.seed)
        queries = typical_queries()
        before = time_queries(queries, args.repeats)
        started = time.perf_counter()
        runner.migrate()
        indexed_seconds = time.perf_counter() - started
        analyse(database, engine)
        after = time_queries(queries, args.repeats)
        searches = time_searches(texts, {"LIKE scan": like_scan, "full-text": full_text})
    finally:
        database.close()
    return {
        "populate_seconds": populated.seconds,
        "backfill_seconds": backfill_seconds,
        "indexed_seconds": indexed_seconds,
        "before": before,
        "after": after,
        "searches": searches,
    }


def show(engine, args, figures):
    """Print one engine's figures side by side; return whether the target is met."""
    print(f"\n{engine}: {args.images:,} images (populated in {figures['populate_seconds']:.0f} s; "
          f"005's backfill {figures['backfill_seconds']:.1f} s; "
          f"006 built in {figures['indexed_seconds']:.1f} s), "
          f"{args.searches} searches of each kind, first page of {PAGE}")  # fmt: skip
    print(f"{'search':<12}{'LIKE p50':>10}{'p99':>10}{'full-text p50':>15}{'p99':>10}"
          f"{'LIKE/FTS p99':>14}")  # fmt: skip
    summary = {key: percentiles(times) for key, times in figures["searches"].items()}
    kinds = list(dict.fromkeys(kind for _, kind in summary))
    for kind in kinds:
        like, fts = summary[("LIKE scan", kind)], summary[("full-text", kind)]
        print(f"{kind:<12}{like[0]:>10.2f}{like[1]:>10.2f}{fts[0]:>15.2f}{fts[1]:>10.2f}"
              f"{like[1] / fts[1]:>13.1f}x")  # fmt: skip
    every_like = [
        ms
        for (side, _), times in figures["searches"].items()
        if side == "LIKE scan"
        for ms in times
    ]
    every_fts = [
        ms
        for (side, _), times in figures["searches"].items()
        if side == "full-text"
        for ms in times
    ]
    like, fts = percentiles(every_like), percentiles(every_fts)
    print(f"{'all':<12}{like[0]:>10.2f}{like[1]:>10.2f}{fts[0]:>15.2f}{fts[1]:>10.2f}"
          f"{like[1] / fts[1]:>13.1f}x")  # fmt: skip
    print(f"\n{'query (median ms)':<40}{'before 006':>12}{'after 006':>12}{'before/after':>14}")
    for name, before in figures["before"].items():
        after = figures["after"][name]
        print(f"{name:<40}{before:>12.2f}{after:>12.2f}{before / after:>13.1f}x")
    met = fts[1] <= like[1]
    print(f"full-text p99 {fts[1]:.2f} ms vs LIKE scan p99 {like[1]:.2f} ms "
          f"(target: no slower) {'PASS' if met else 'FAIL'}")  # fmt: skip
    return met


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--searches", type=int, default=200, help="words searched each way")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each typical query")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, tiny sizes)"
    )
    args = parser.parse_args()
    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for engine in engines:
            url = database_url(engine, folder)
            try:
                results.append(show(engine, args, measure(engine, url, args)))
            finally:
                engine_for_url(url).drop(url)
    return 0 if args.smoke or all(results) else 1


if __name__ == "__main__":
    with as_system():  # a benchmark is maintenance code: it writes with no acting user
        sys.exit(main())
