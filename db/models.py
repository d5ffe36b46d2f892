"""CloneGallery's tables as Peewee models.

Bind the models to an open database once, then use them as any Peewee model::

    from db.models import ALL_MODELS, Image, User, bind_models

    bind_models(database)                      # e.g. db.engines.open_database(url)
    with reading_from(standby):                # reads from a standby (db.read_url)
        Image.visible_to(viewer).count()
    with as_system():                          # maintenance code; the app uses acting_as
        ada = User.create(email="ada@example.com", name="Ada", role="editor")
    with acting_as(ada):
        Image.create(uploader=ada, title="Dawn", url="https://cdn.example.com/dawn.jpg",
                     width=1920, height=1080, size=482_113, format="JPEG")

The schema itself is created by the migrations in ``migrations/``; the models
declare the same columns, constraints and indexes, which ``tests/test_schema.py``
proves by comparing a database built from each.

Validation happens twice, from one declaration. Each column's rules (see
``checked``) are tested by ``save()`` before the database is touched, raising
``db.errors.ValidationError`` with every broken rule named as ``table.column``
(``images.format: 'BMP' is not one of JPEG, PNG, GIF, WEBP, AVIF, HEIC, TIFF``),
and they are rendered as portable CHECK constraints, so rows written around the
models (``Model.insert()``, raw SQL, seeders) are refused by the database too.

What deleting a row does to the rows that point at it (ON DELETE):

- an image takes its tag links, album links, likes and AI generation
  parameters with it (CASCADE on image_tags, album_images, user_likes and
  ai_generation_meta);
- an image that is an album's cover leaves the album without a cover
  (albums.cover_image_id SET NULL);
- a user who still owns images or albums cannot be deleted (RESTRICT on
  images.uploader_id and albums.created_by): move or delete the content first;
  their likes are not content and go with them (CASCADE on user_likes);
- an album or a tag takes its links with it (CASCADE on album_images and
  image_tags).

Who may write what is db.access's: writes run inside ``acting_as(user)`` (or
``as_system()`` for maintenance code) and are checked; reads go through the query
helpers (``Image.visible_to(viewer)`` and friends), which keep private rows their owner's.

The counters tags.count, albums.image_count and users.uploads belong to the
triggers of migration 003: insert rows with them at 0 and let the database count.
Timestamps are naive UTC, as SQL's CURRENT_TIMESTAMP is.
"""

import re
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal

import peewee as pw

from db import access, search
from db.binding import database_proxy, reading
from db.engines import engine_for
from db.errors import ValidationError

ROLES = ("admin", "editor", "visitor")
PRIVACY = ("public", "private")
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIC", "TIFF")

ID_LENGTH = 64


def new_id():
    """Return a fresh text primary key."""
    return uuid.uuid4().hex


def utc_now():
    """Return the current time as a naive UTC datetime (what CURRENT_TIMESTAMP stores)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --- Rules: one declaration, checked in Python and by the database ------------------------


class Rule:
    """A constraint on one column: a Python test and the portable SQL CHECK mirroring it."""

    def __init__(self, allowed, test, check_sql):
        self.allowed = allowed  # completes "<value> is not ...", e.g. "a number >= 0"
        self.test = test
        self.check_sql = check_sql  # a format string with a {column} placeholder

    def accepts(self, value):
        """Return whether the value passes (NULL is the business of the column's nullability)."""
        return value is None or bool(self.test(value))

    def sql(self, column):
        """Return the CHECK expression for the column."""
        return self.check_sql.format(column=column)


def _is_number(value):
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _sql_string(text):
    return "'" + text.replace("'", "''") + "'"


def one_of(values):
    """Allow only the listed values."""
    listed = ", ".join(_sql_string(value) for value in values)
    return Rule(
        f"one of {', '.join(values)}",
        lambda value: value in values,
        f"{{column}} IN ({listed})",
    )


def at_least(minimum):
    """Allow numbers greater than or equal to ``minimum``."""
    return Rule(
        f"a number >= {minimum}",
        lambda value: _is_number(value) and value >= minimum,
        f"{{column}} >= {minimum}",
    )


def greater_than(minimum):
    """Allow numbers strictly greater than ``minimum``."""
    return Rule(
        f"a number > {minimum}",
        lambda value: _is_number(value) and value > minimum,
        f"{{column}} > {minimum}",
    )


# Python is stricter than the LIKE pattern (no spaces, one @); the database is the backstop.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

NON_NEGATIVE = at_least(0)
POSITIVE = greater_than(0)
NOT_BLANK = Rule(
    "a non-blank text",
    lambda value: isinstance(value, str) and value.strip() != "",
    "LENGTH(TRIM({column})) > 0",
)
EMAIL = Rule(
    "an email address like name@example.com",
    lambda value: isinstance(value, str) and _EMAIL.fullmatch(value) is not None,
    "{column} LIKE '%_@_%._%'",
)


class _RuleCheck(pw.Node):
    """The CHECK clause of a rule, rendered when the column name is known (at DDL time)."""

    def __init__(self, field, rule):
        self.field = field
        self.rule = rule

    def __sql__(self, ctx):
        expression = self.rule.sql(self.field.column_name)
        if ctx.state.param == "%s":
            # psycopg and PyMySQL read "%" as a placeholder even in DDL: write LIKE's "%" as "%%".
            expression = expression.replace("%", "%%")
        return ctx.literal(f"CHECK ({expression})")


def checked(field, *rules):
    """Attach rules to a field: ``save()`` tests them and the table gets their CHECKs."""
    field.rules = rules
    field.constraints = [*(field.constraints or ()), *(_RuleCheck(field, r) for r in rules)]
    return field


# --- Column kinds used by several tables --------------------------------------------------


def server_default(sql_literal):
    """Return a DEFAULT clause, so rows inserted outside the models get the value too."""
    return pw.SQL(f"DEFAULT {sql_literal}")


def text_id():
    """A text primary key, generated when not given."""
    return checked(pw.CharField(max_length=ID_LENGTH, primary_key=True, default=new_id), NOT_BLANK)


def counter():
    """A non-negative count starting at 0."""
    return checked(pw.IntegerField(default=0, constraints=[server_default(0)]), NON_NEGATIVE)


def flag(**kwargs):
    """A boolean, false unless set."""
    return pw.BooleanField(default=False, constraints=[server_default("FALSE")], **kwargs)


def timestamp(**kwargs):
    """A moment in naive UTC, now unless given."""
    return pw.DateTimeField(
        default=utc_now, constraints=[server_default("CURRENT_TIMESTAMP")], **kwargs
    )


def choice(values, default=None, max_length=16, **kwargs):
    """A short text restricted to ``values``; required when it has no default."""
    constraints = [] if default is None else [server_default(_sql_string(default))]
    field = pw.CharField(max_length=max_length, default=default, constraints=constraints, **kwargs)
    return checked(field, one_of(values))


# --- Models -------------------------------------------------------------------------------


class BaseModel(pw.Model):
    """Binds every model to ``database_proxy`` and validates rows before saving them."""

    def save(self, force_insert=False, only=None):
        """Validate the row, then save it; raise ValidationError listing every broken rule."""
        inserting = force_insert or self._pk is None
        problems = [
            problem
            for field in self._meta.sorted_fields
            if (problem := self._problem_with(field, inserting)) is not None
        ]
        if problems:
            raise ValidationError("; ".join(problems))
        access.check_save(self, inserting)
        with access.instance_write():
            changed = super().save(force_insert=force_insert, only=only)
        # peewee answers False when there was nothing to write; 0 is an update of no row.
        if not inserting and changed == 0 and changed is not False:
            self._refuse_unwritten("a save")
        return changed

    def delete_instance(self, recursive=False, delete_nullable=False):
        """Delete the row if the acting user may (db.access); raise PermissionDenied if not."""
        access.check_delete(self)
        with access.instance_write():
            deleted = super().delete_instance(recursive=recursive, delete_nullable=delete_nullable)
        if deleted == 0:
            self._refuse_unwritten("a delete")
        return deleted

    def _refuse_unwritten(self, action):
        """Raise when row-level security filtered this row's write to nothing."""
        database = self._meta.database
        database = getattr(database, "obj", database)  # the models are bound through a proxy
        if engine_for(database).row_level_security:
            raise access.unwritten(self, action)

    # Class-level write queries skip the per-row rules: db.access lets only admins and
    # maintenance code (as_system) build them. save() and delete_instance() pass.

    @classmethod
    def insert(cls, *args, **kwargs):
        access.check_query(cls)
        return super().insert(*args, **kwargs)

    @classmethod
    def insert_many(cls, rows, fields=None):
        access.check_query(cls)
        return super().insert_many(rows, fields)

    @classmethod
    def insert_from(cls, query, fields):
        access.check_query(cls)
        return super().insert_from(query, fields)

    @classmethod
    def replace(cls, *args, **kwargs):
        access.check_query(cls)
        return super().replace(*args, **kwargs)

    @classmethod
    def replace_many(cls, rows, fields=None):
        access.check_query(cls)
        return super().replace_many(rows, fields)

    @classmethod
    def update(cls, *args, **kwargs):
        access.check_query(cls)
        return super().update(*args, **kwargs)

    @classmethod
    def delete(cls):
        access.check_query(cls)
        return super().delete()

    def _problem_with(self, field, inserting):
        where = f"{self._meta.table_name}.{field.column_name}"
        if field.name not in self.__data__:
            # An UPDATE writes only the loaded columns; an INSERT needs every required one.
            if inserting and not field.null and not isinstance(field, pw.AutoField):
                return f"{where}: a value is required"
            return None
        value = self.__data__[field.name]
        if value is None:
            if field.null or isinstance(field, pw.AutoField) or self._related_has_id(field):
                return None
            return f"{where}: a value is required (got None)"
        max_length = getattr(field, "max_length", None)
        if isinstance(value, str) and max_length and len(value) > max_length:
            return f"{where}: {_shorten(value)!r} is longer than {max_length} characters"
        for rule in getattr(field, "rules", ()):
            if not rule.accepts(value):
                return f"{where}: {_shorten(value)!r} is not {rule.allowed}"
        return None

    def _related_has_id(self, field):
        # A row assigned before it was saved: peewee copies its id in just before the INSERT.
        related = self.__rel__.get(field.name) if isinstance(field, pw.ForeignKeyField) else None
        return related is not None and getattr(related, field.rel_field.name) is not None

    class Meta:
        database = database_proxy
        legacy_table_names = False  # index names start with the table name, as the migrator's


def _shorten(value, limit=60):
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


class User(BaseModel):
    """Someone who signs in: uploads images, curates albums, likes images."""

    id = text_id()
    email = checked(pw.CharField(max_length=254, unique=True), EMAIL)
    name = checked(pw.CharField(max_length=100), NOT_BLANK)
    role = choice(ROLES, default="visitor")
    avatar = pw.TextField(null=True)
    joined_at = timestamp()
    uploads = counter()
    views = counter()

    class Meta:
        table_name = "users"


class Image(BaseModel):
    """An uploaded picture and what is known about it."""

    id = text_id()
    title = checked(pw.CharField(max_length=200), NOT_BLANK)
    caption = pw.TextField(null=True)
    alt_text = pw.TextField(null=True)
    url = checked(pw.TextField(), NOT_BLANK)
    thumbnail = pw.TextField(null=True)
    # Indexed by (uploader_id, uploaded_at) below, whose prefix serves lookups by uploader.
    uploader = pw.ForeignKeyField(
        User, column_name="uploader_id", backref="images", on_delete="RESTRICT", index=False
    )
    uploaded_at = timestamp(index=True)
    privacy = choice(PRIVACY, default="public", index=True)
    views = counter()
    is_ai_generated = flag()
    width = checked(pw.IntegerField(), POSITIVE)
    height = checked(pw.IntegerField(), POSITIVE)
    size = checked(pw.BigIntegerField(), POSITIVE)  # bytes
    format = choice(IMAGE_FORMATS, max_length=8)

    OWNER = "uploader"  # whose private image it is (db.access)

    class Meta:
        table_name = "images"
        indexes = ((("uploader", "uploaded_at"), False),)

    # --- What a viewer (a User, or None for an anonymous visitor) may see ----------------

    @classmethod
    def visible_to(cls, viewer):
        """Images ``viewer`` may see (public, their own, all for an admin), newest first."""
        newest_first = (cls.uploaded_at.desc(), cls.id)
        return cls.select().where(access.visible_filter(cls, viewer)).order_by(*newest_first)

    @classmethod
    def uploaded_by(cls, user, viewer):
        """``user``'s uploads that ``viewer`` may see."""
        return cls.visible_to(viewer).where(cls.uploader == user.id)

    @classmethod
    def liked_by(cls, user, viewer):
        """Images ``user`` likes that ``viewer`` may see, most recently liked first."""
        return (
            cls.visible_to(viewer)
            .join(UserLike, on=(UserLike.image == cls.id))
            .where(UserLike.user == user.id)
            .order_by(UserLike.liked_at.desc(), cls.id)
        )

    @classmethod
    def tagged(cls, name, viewer):
        """Images filed under the tag named exactly ``name`` that ``viewer`` may see."""
        return (
            cls.visible_to(viewer)
            .join(ImageTag, on=(ImageTag.image == cls.id))
            .join(Tag, on=(Tag.id == ImageTag.tag))
            .where(Tag.name == name)
        )

    @classmethod
    def in_album(cls, album, viewer):
        """The album's images in order, if ``viewer`` may see the album: only those images
        ``viewer`` may see (a private image in a public album stays its owner's)."""
        return (
            cls.visible_to(viewer)
            .join(AlbumImage, on=(AlbumImage.image == cls.id))
            .join(Album, on=(Album.id == AlbumImage.album))
            .where(AlbumImage.album == album.id, access.visible_filter(Album, viewer))
            .order_by(AlbumImage.position, cls.id)
        )

    @classmethod
    def search(cls, text, viewer):
        """Images ``viewer`` may see whose title, caption, tags or AI prompt hold each word
        of ``text`` as the start of a word, best match first (db.search: only words count,
        punctuation and query syntax are plain separators; no word, no match)."""
        return search.matching_images(cls.visible_to(viewer), cls, text)


class Tag(BaseModel):
    """A label images are filed under."""

    id = pw.AutoField()
    name = checked(pw.CharField(max_length=64, unique=True), NOT_BLANK)
    count = counter()  # images carrying the tag, kept by triggers
    trending = flag(index=True)

    class Meta:
        table_name = "tags"

    @classmethod
    def autocomplete(cls, prefix, limit=10):
        """Tags whose name starts with ``prefix`` as typed, case-insensitively, most used
        first: at most ``limit``, read from an index (db.search)."""
        return search.tags_starting(cls.select(), cls, prefix, limit)


class Album(BaseModel):
    """An ordered collection of images made by a user."""

    id = text_id()
    title = checked(pw.CharField(max_length=200), NOT_BLANK)
    description = pw.TextField(null=True)
    cover_image = pw.ForeignKeyField(
        Image,
        column_name="cover_image_id",
        null=True,
        backref="covered_albums",
        on_delete="SET NULL",
    )
    created_by = pw.ForeignKeyField(
        User, column_name="created_by", backref="albums", on_delete="RESTRICT"
    )
    privacy = choice(PRIVACY, default="public")
    image_count = counter()  # kept by triggers
    created_at = timestamp()

    OWNER = "created_by"  # whose private album it is (db.access)

    class Meta:
        table_name = "albums"

    @classmethod
    def visible_to(cls, viewer):
        """Albums ``viewer`` (a User, or None) may see, newest first."""
        newest_first = (cls.created_at.desc(), cls.id)
        return cls.select().where(access.visible_filter(cls, viewer)).order_by(*newest_first)

    @classmethod
    def created_by_user(cls, user, viewer):
        """``user``'s albums that ``viewer`` may see."""
        return cls.visible_to(viewer).where(cls.created_by == user.id)


class ImageTag(BaseModel):
    """An image filed under a tag (once per pair)."""

    # The primary key (image_id, tag_id) indexes image_id.
    image = pw.ForeignKeyField(
        Image, column_name="image_id", backref="tag_links", on_delete="CASCADE", index=False
    )
    tag = pw.ForeignKeyField(Tag, column_name="tag_id", backref="image_links", on_delete="CASCADE")

    class Meta:
        table_name = "image_tags"
        primary_key = pw.CompositeKey("image", "tag")


class AlbumImage(BaseModel):
    """An image placed in an album (once per pair), at a position."""

    # The primary key (album_id, image_id) indexes album_id.
    album = pw.ForeignKeyField(
        Album, column_name="album_id", backref="image_links", on_delete="CASCADE", index=False
    )
    image = pw.ForeignKeyField(
        Image, column_name="image_id", backref="album_links", on_delete="CASCADE"
    )
    position = counter()
    added_at = timestamp()

    class Meta:
        table_name = "album_images"
        primary_key = pw.CompositeKey("album", "image")
        indexes = ((("album", "position"), False),)


class UserLike(BaseModel):
    """A user's like of an image (one per user and image)."""

    # The primary key (user_id, image_id) indexes user_id.
    user = pw.ForeignKeyField(
        User, column_name="user_id", backref="likes", on_delete="CASCADE", index=False
    )
    image = pw.ForeignKeyField(Image, column_name="image_id", backref="likes", on_delete="CASCADE")
    liked_at = timestamp()

    class Meta:
        table_name = "user_likes"
        primary_key = pw.CompositeKey("user", "image")


class AIGenerationMeta(BaseModel):
    """How an AI-generated image was made (one row per image)."""

    image = pw.ForeignKeyField(
        Image,
        column_name="image_id",
        primary_key=True,
        backref="generation_meta",
        on_delete="CASCADE",
    )
    model = checked(pw.CharField(max_length=200), NOT_BLANK)  # e.g. "stable-diffusion-xl-base-1.0"
    prompt = checked(pw.TextField(), NOT_BLANK)
    negative_prompt = pw.TextField(null=True)
    seed = checked(pw.BigIntegerField(null=True), NON_NEGATIVE)  # SD seeds reach 2**32 - 1
    steps = checked(pw.IntegerField(null=True), POSITIVE)
    guidance_scale = checked(pw.FloatField(null=True), NON_NEGATIVE)  # CFG; 0 for turbo models
    sampler = pw.CharField(max_length=64, null=True)  # e.g. "DPM++ 2M Karras"
    created_at = timestamp()

    class Meta:
        table_name = "ai_generation_meta"


class Analytics(BaseModel):
    """One measurement of an application metric at a moment."""

    id = pw.AutoField()
    metric = checked(pw.CharField(max_length=100), NOT_BLANK)  # e.g. "page_views"
    value = pw.DoubleField()
    category = pw.CharField(max_length=50, null=True)  # e.g. "usage", "performance"
    unit = pw.CharField(max_length=20, null=True)  # e.g. "ms", "bytes"
    recorded_at = timestamp()

    class Meta:
        table_name = "analytics"
        indexes = ((("metric", "recorded_at"), False),)


ALL_MODELS = (User, Image, Tag, Album, ImageTag, AlbumImage, UserLike, AIGenerationMeta, Analytics)
# The counters the triggers of migration 003 keep, each with the key of the rows it
# counts (db.health recounts them): rows are inserted with them at 0.
COUNTED_ROWS = (
    (Tag.count, ImageTag.tag),
    (Album.image_count, AlbumImage.album),
    (User.uploads, Image.uploader),
)
TRIGGER_COUNTERS = tuple(counter for counter, _ in COUNTED_ROWS)


def bind_models(database):
    """Point every model at ``database`` (a connected peewee Database); return it."""
    database_proxy.initialize(database)
    return database


@contextmanager
def reading_from(database):
    """Send the models' queries inside the block to ``database`` (e.g. a standby opened
    from ``db.read_url``; None: the bound database), for this thread or task only; writes
    there are refused by a standby. The acting user goes along, so row-level security
    reads the same there."""
    if database is None:
        yield database_proxy.obj
        return
    with reading(database):
        access.claim_acting_user(database)  # row-level security reads it there
        yield database
