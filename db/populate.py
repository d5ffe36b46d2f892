"""A realistic gallery at scale, for load tests and query tuning: ``db.populate``.

    plan = GalleryPlan(users=50_000, images=1_000_000, seed=42)
    result = populate(database, plan, on_progress=show)   # PopulateResult(rows, seconds)

What it makes, for ``images`` images and ``users`` users:

- tags: a vocabulary of up to 1,000 photography tags (existing tags of the same name,
  such as the sample seed's, are reused); each image gets 1-6 (about 3), drawn with
  long-tailed (Zipf) popularity;
- likes: per image a power-law (Pareto) number, from users whose activity is itself
  long-tailed, at most one per user and image;
- about 20 % of the images are AI-generated and get generation metadata;
- upload times spread over 2019-2025; sizes and dimensions that fit the format;
- one album per 100 images, each of 10-200 images in order, its first image as cover.

The same plan on the same database gives the same rows (``random.Random(seed)``; no
clock is read). Everything is written in one transaction, so an interrupted run
leaves nothing; the counters (tags.count, albums.image_count, users.uploads) are kept
by the triggers of migration 003. Rows stream in chunks, so memory stays flat.
"""

import bisect
import datetime
import itertools
import random
import time
from dataclasses import dataclass

from db.engines import engine_for
from db.errors import ConfigError
from db.models import (
    AIGenerationMeta,
    Album,
    AlbumImage,
    Image,
    ImageTag,
    Tag,
    User,
    UserLike,
)

DEFAULT_IMAGES = 10_000
IMAGES_PER_USER = 20
CHUNK_IMAGES = 10_000
IMAGES_PER_ALBUM = 100
ALBUMS_PER_BATCH = 200
ALBUM_SIZES = (10, 200)
AI_SHARE = 0.2
PRIVATE_SHARE = 0.1
MAX_TAGS = 1_000
LIKES_PARETO_ALPHA = 1.6
EPOCH = datetime.datetime(2019, 1, 1)
SPAN_SECONDS = int((datetime.datetime(2026, 1, 1) - EPOCH).total_seconds())

# The tables written, parents first, and their columns in the models' order: the
# generator's row tuples follow this order.
POPULATED_MODELS = (User, Image, AIGenerationMeta, ImageTag, UserLike, Album, AlbumImage)
COLUMNS = {
    model._meta.table_name: tuple(field.column_name for field in model._meta.sorted_fields)
    for model in POPULATED_MODELS
}

FIRST_NAMES = (
    "Maya", "Liam", "Aisha", "Noah", "Sofia", "Kenji", "Elena", "Mateo", "Zara", "Oskar",
    "Priya", "Lucas", "Ines", "Tariq", "Hana", "Felix", "Amara", "Jonas", "Leila", "Diego",
)  # fmt: skip
LAST_NAMES = (
    "Chen", "Okafor", "Novak", "Silva", "Tanaka", "Larsen", "Haddad", "Moreau", "Rossi",
    "Kowalski", "Mensah", "Berg", "Ivanova", "Duarte", "Nakamura", "Fischer", "Adeyemi",
)  # fmt: skip
MOODS = (
    "misty", "golden", "quiet", "stormy", "frozen", "neon", "sunlit", "hidden", "ancient",
    "crimson", "silver", "wild", "lonely", "vivid", "faded", "blue", "autumn", "midnight",
    "urban", "coastal", "desert", "alpine", "tropical", "rainy", "foggy", "windswept",
    "minimal", "abstract", "vintage", "glowing",
)  # fmt: skip
SUBJECTS = (
    "harbour", "forest", "skyline", "portrait", "market", "bridge", "lighthouse", "canyon",
    "street", "meadow", "waterfall", "cathedral", "fox", "owl", "glacier", "alley",
    "reflection", "dunes", "garden", "train", "harvest", "reef", "volcano", "temple",
    "rooftops", "lantern", "orchard", "pier", "tundra", "cafe", "staircase", "kite",
    "fjord",
)  # fmt: skip
MOMENTS = ("at dawn", "at dusk", "in the rain", "after the storm", "at noon", "by night",
           "in winter", "in spring", "from above", "up close")  # fmt: skip
FORMATS = (
    ("JPEG", 0.6, 0.35),
    ("PNG", 0.15, 1.6),
    ("WEBP", 0.15, 0.22),
    ("AVIF", 0.05, 0.15),
    ("HEIC", 0.05, 0.25),
)  # (format, share, bytes per pixel)
RESOLUTIONS = ((1920, 1080), (1080, 1350), (4032, 3024), (3000, 2000), (2048, 2048),
               (1280, 720), (6000, 4000), (1024, 1024), (3840, 2160))  # fmt: skip
AI_MODELS = ("stable-diffusion-xl-base-1.0", "sdxl-turbo", "flux.1-dev", "stable-diffusion-3.5")
SAMPLERS = ("DPM++ 2M Karras", "Euler a", "DDIM", "UniPC", "DPM++ SDE Karras")
ROLES = (("visitor", 0.8), ("editor", 0.18), ("admin", 0.02))


@dataclass(frozen=True)
class GalleryPlan:
    """How much to make, and from which random seed."""

    users: int
    images: int
    seed: int = 1

    @classmethod
    def sized(cls, images=None, users=None, seed=None):
        """Return a plan with the defaults filled in: 10,000 images, a user per 20 images."""
        images = DEFAULT_IMAGES if images is None else images
        if users is None:
            users = max(1, images // IMAGES_PER_USER) if isinstance(images, int) else 1
        return cls(users=users, images=images, seed=1 if seed is None else seed)

    def check(self):
        """Raise ConfigError naming the option when the plan cannot be made."""
        for option, value, minimum in (("--users", self.users, 1), ("--images", self.images, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{option} must be a whole number >= {minimum}, not {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"--seed must be a whole number, not {self.seed!r}")

    @property
    def prefix(self):
        """The start of every id this plan makes: runs with other seeds never collide."""
        return f"pop{self.seed}-"


@dataclass(frozen=True)
class PopulateResult:
    """Rows written per table, and how long it took."""

    rows: dict
    seconds: float

    @property
    def total_rows(self):
        return sum(self.rows.values())


def populate(database, plan, on_progress=None):
    """Write the planned gallery in one transaction; return a PopulateResult."""
    plan.check()
    started = time.perf_counter()
    engine = engine_for(database)
    rows = dict.fromkeys(COLUMNS, 0)
    report = on_progress or (lambda done, total: None)
    with engine.transaction(database), database.bind_ctx([Tag]):
        _refuse_second_run(database, plan)
        tags_before = Tag.select().count()
        generator = GalleryGenerator(plan, _tag_ids(database, tag_vocabulary(plan.images)))
        rows["tags"] = Tag.select().count() - tags_before
        for table, batch in generator.batches(report):
            engine.bulk_insert(database, table, COLUMNS[table], batch)
            rows[table] += len(batch)
    return PopulateResult(rows, time.perf_counter() - started)


def tag_vocabulary(images):
    """Return the tag names for a gallery of ``images`` images, most popular first."""
    size = min(MAX_TAGS, 50 + images // 100)
    names = [f"{mood}-{subject}" for subject in SUBJECTS for mood in MOODS]
    random.Random(0).shuffle(names)
    return [*SUBJECTS, *names][:size]


def _tag_ids(database, names):
    Tag.insert_many([{"name": name} for name in names]).on_conflict_ignore().execute()
    ids = dict(Tag.select(Tag.name, Tag.id).where(Tag.name.in_(names)).tuples())
    return [ids[name] for name in names]


def _refuse_second_run(database, plan):
    sql = "SELECT 1 FROM users WHERE id LIKE ? LIMIT 1".replace("?", database.param)
    if database.execute_sql(sql, (plan.prefix + "%",)).fetchone():
        raise ConfigError(
            f"this database was already populated with --seed {plan.seed}; "
            "use another --seed, or db.reset --data-only first"
        )


class GalleryGenerator:
    """Streams the rows of a planned gallery as (table, rows) batches, parents first."""

    def __init__(self, plan, tag_ids):
        self.plan = plan
        self.tag_ids = tag_ids
        self.random = random.Random(plan.seed)
        self.user_ids = [f"{plan.prefix}u{n}" for n in range(plan.users)]
        self.tag_weights = _cumulative(1 / rank for rank in range(1, len(tag_ids) + 1))
        # Activity is long-tailed: a few users upload and like far more than most.
        self.user_weights = _cumulative(1 / rank**0.8 for rank in range(1, plan.users + 1))
        self.titles = [f"{m.title()} {s} {t}" for m in MOODS for s in SUBJECTS for t in MOMENTS]

    def batches(self, report):
        """Yield (table, rows) in an order that satisfies every foreign key."""
        yield "users", self._users()
        done = 0
        while done < self.plan.images:
            count = min(CHUNK_IMAGES, self.plan.images - done)
            yield from self._image_chunk(done, count)
            done += count
            report(done, self.plan.images)
        yield from self._albums()

    def image_id(self, number):
        return f"{self.plan.prefix}i{number}"

    def _when(self):
        moment = EPOCH + datetime.timedelta(seconds=self.random.randrange(SPAN_SECONDS))
        return moment.isoformat(sep=" ")

    def _users(self):
        rng = self.random
        roles, role_weights = zip(*ROLES, strict=True)
        rows = []
        for n, user_id in enumerate(self.user_ids):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            rows.append((
                user_id,
                f"{first.lower()}.{last.lower()}.{n}@{self.plan.prefix}example.com",
                f"{first} {last}",
                rng.choices(roles, role_weights)[0],
                f"https://cdn.clonegallery.example/avatars/{user_id}.jpg",
                self._when(),
                0,
                int(rng.paretovariate(1.2) * 10),
            ))  # fmt: skip
        return rows

    def _image_chunk(self, first, count):
        rng = self.random
        numbers = range(first, first + count)
        uploaders = rng.choices(self.user_ids, cum_weights=self.user_weights, k=count)
        titles = rng.choices(self.titles, k=count)
        formats = rng.choices(FORMATS, [share for _, share, _ in FORMATS], k=count)
        resolutions = rng.choices(RESOLUTIONS, k=count)
        images, metas, links, likes = [], [], [], []
        for number, uploader, title, (fmt, _, density), (width, height) in zip(
            numbers, uploaders, titles, formats, resolutions, strict=True
        ):
            image_id = self.image_id(number)
            is_ai = rng.random() < AI_SHARE
            uploaded_at = self._when()
            images.append((
                image_id, title, f"{title}, photographed for the gallery.",
                f"{title.lower()}", f"https://cdn.clonegallery.example/i/{image_id}.{fmt.lower()}",
                f"https://cdn.clonegallery.example/t/{image_id}.webp", uploader, uploaded_at,
                "private" if rng.random() < PRIVATE_SHARE else "public",
                int(rng.paretovariate(1.1) * 20), is_ai, width, height,
                int(width * height * density * rng.uniform(0.8, 1.2)) + 1, fmt,
            ))  # fmt: skip
            if is_ai:
                metas.append(self._generation_meta(image_id, title, uploaded_at))
            links.extend((image_id, tag) for tag in self._tags_for_one_image())
            likes.extend((user, image_id, uploaded_at) for user in self._likers())
        yield "images", images
        yield "ai_generation_meta", metas
        yield "image_tags", links
        yield "user_likes", likes

    def _generation_meta(self, image_id, title, created_at):
        rng = self.random
        return (
            image_id,
            rng.choice(AI_MODELS),
            f"{title.lower()}, highly detailed, natural light, 35mm photograph",
            "blurry, low quality, watermark",
            rng.randrange(2**32),
            rng.choice((20, 25, 30, 40, 50)),
            rng.choice((3.5, 5.0, 7.0, 7.5, 9.0)),
            rng.choice(SAMPLERS),
            created_at,
        )

    def _tags_for_one_image(self):
        wanted = min(len(self.tag_ids), 1 + int(self.random.expovariate(0.4)), 6)
        return _distinct_draws(self.random, self.tag_ids, self.tag_weights, wanted)

    def _likers(self):
        wanted = min(self.plan.users, int(self.random.paretovariate(LIKES_PARETO_ALPHA)) - 1)
        return _distinct_draws(self.random, self.user_ids, self.user_weights, wanted)

    def _albums(self):
        images = self.plan.images
        album_count = images // IMAGES_PER_ALBUM if images >= ALBUM_SIZES[0] else 0
        for first in range(0, album_count, ALBUMS_PER_BATCH):
            albums, placements = [], []
            for n in range(first, min(first + ALBUMS_PER_BATCH, album_count)):
                album, members = self._album(n)
                albums.append(album)
                placements.extend(
                    (album[0], self.image_id(number), position, album[-1])
                    for position, number in enumerate(members)
                )
            yield "albums", albums
            yield "album_images", placements

    def _album(self, n):
        rng = self.random
        size = min(self.plan.images, rng.randint(*ALBUM_SIZES))
        members = rng.sample(range(self.plan.images), size)
        title = f"{rng.choice(MOODS).title()} {rng.choice(SUBJECTS)}s"
        album = (
            f"{self.plan.prefix}a{n}", title,
            f"A collection of {size} photographs: {title.lower()}.",
            self.image_id(members[0]), rng.choice(self.user_ids),
            "private" if rng.random() < PRIVATE_SHARE else "public", 0, self._when(),
        )  # fmt: skip
        return album, members


def _cumulative(weights):
    return list(itertools.accumulate(weights))


def _distinct_draws(rng, population, cum_weights, wanted):
    """Draw ``wanted`` distinct items, each with the weights' probability, in draw order."""
    chosen = {}
    total = cum_weights[-1]
    while len(chosen) < wanted:
        chosen[population[bisect.bisect(cum_weights, rng.random() * total)]] = None
    return list(chosen)


def count_rows(database, tables=tuple(COLUMNS)):
    """Return {table: row count}."""
    return {
        table: database.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in tables
    }
