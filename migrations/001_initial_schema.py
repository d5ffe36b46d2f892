"""Create the CloneGallery tables: users, images, tags, albums, their links and metadata.

The models below are frozen copies of db/models.py as it stood when this migration
was written: the same columns, types, nullability, server defaults, CHECKs,
unique keys and foreign keys with their ON DELETE rules. They must never import
db.models, so this file keeps building the same schema when the models evolve;
change the schema with a new migration instead. The indexes come in 002.
"""

import peewee as pw

# CHECK expressions, frozen; db/models.py derives the same text from its rules.
ROLE_CHECK = "role IN ('admin', 'editor', 'visitor')"
PRIVACY_CHECK = "privacy IN ('public', 'private')"
FORMAT_CHECK = "format IN ('JPEG', 'PNG', 'GIF', 'WEBP', 'AVIF', 'HEIC', 'TIFF')"
EMAIL_CHECK = "email LIKE '%_@_%._%'"


def up(migrator, db):
    db.create_tables(_models(db), safe=False)


def down(migrator, db):
    tables = [model._meta.table_name for model in reversed(_models(db))]
    migrator.migrate(*(migrator.drop_table(table) for table in tables))


def _models(db):
    """Return the frozen models bound to db, parents before children."""

    def check(expression):
        if db.param == "%s":
            # psycopg and PyMySQL read "%" as a placeholder even in DDL.
            expression = expression.replace("%", "%%")
        return pw.Check(expression)

    def not_blank(column):
        return check(f"LENGTH(TRIM({column})) > 0")

    def text_id():
        return pw.CharField(max_length=64, primary_key=True, constraints=[not_blank("id")])

    def counter(column):
        return pw.IntegerField(constraints=[pw.SQL("DEFAULT 0"), check(f"{column} >= 0")])

    def flag():
        return pw.BooleanField(constraints=[pw.SQL("DEFAULT FALSE")])

    def timestamp():
        return pw.DateTimeField(constraints=[pw.SQL("DEFAULT CURRENT_TIMESTAMP")])

    def privacy_choice():
        return pw.CharField(
            max_length=16, constraints=[pw.SQL("DEFAULT 'public'"), check(PRIVACY_CHECK)]
        )

    class Frozen(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Frozen):
        id = text_id()
        email = pw.CharField(max_length=254, unique=True, constraints=[check(EMAIL_CHECK)])
        name = pw.CharField(max_length=100, constraints=[not_blank("name")])
        role = pw.CharField(
            max_length=16, constraints=[pw.SQL("DEFAULT 'visitor'"), check(ROLE_CHECK)]
        )
        avatar = pw.TextField(null=True)
        joined_at = timestamp()
        uploads = counter("uploads")
        views = counter("views")

        class Meta:
            table_name = "users"

    class Image(Frozen):
        id = text_id()
        title = pw.CharField(max_length=200, constraints=[not_blank("title")])
        caption = pw.TextField(null=True)
        alt_text = pw.TextField(null=True)
        url = pw.TextField(constraints=[not_blank("url")])
        thumbnail = pw.TextField(null=True)
        uploader = pw.ForeignKeyField(
            User, column_name="uploader_id", on_delete="RESTRICT", index=False
        )
        uploaded_at = timestamp()
        privacy = privacy_choice()
        views = counter("views")
        is_ai_generated = flag()
        width = pw.IntegerField(constraints=[check("width > 0")])
        height = pw.IntegerField(constraints=[check("height > 0")])
        size = pw.BigIntegerField(constraints=[check("size > 0")])
        format = pw.CharField(max_length=8, constraints=[check(FORMAT_CHECK)])

        class Meta:
            table_name = "images"

    class Tag(Frozen):
        id = pw.AutoField()
        name = pw.CharField(max_length=64, unique=True, constraints=[not_blank("name")])
        count = counter("count")
        trending = flag()

        class Meta:
            table_name = "tags"

    class Album(Frozen):
        id = text_id()
        title = pw.CharField(max_length=200, constraints=[not_blank("title")])
        description = pw.TextField(null=True)
        cover_image = pw.ForeignKeyField(
            Image, column_name="cover_image_id", null=True, on_delete="SET NULL", index=False
        )
        created_by = pw.ForeignKeyField(
            User, column_name="created_by", on_delete="RESTRICT", index=False
        )
        privacy = privacy_choice()
        image_count = counter("image_count")
        created_at = timestamp()

        class Meta:
            table_name = "albums"

    class ImageTag(Frozen):
        image = pw.ForeignKeyField(Image, column_name="image_id", on_delete="CASCADE", index=False)
        tag = pw.ForeignKeyField(Tag, column_name="tag_id", on_delete="CASCADE", index=False)

        class Meta:
            table_name = "image_tags"
            primary_key = pw.CompositeKey("image", "tag")

    class AlbumImage(Frozen):
        album = pw.ForeignKeyField(Album, column_name="album_id", on_delete="CASCADE", index=False)
        image = pw.ForeignKeyField(Image, column_name="image_id", on_delete="CASCADE", index=False)
        position = counter("position")
        added_at = timestamp()

        class Meta:
            table_name = "album_images"
            primary_key = pw.CompositeKey("album", "image")

    class UserLike(Frozen):
        user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE", index=False)
        image = pw.ForeignKeyField(Image, column_name="image_id", on_delete="CASCADE", index=False)
        liked_at = timestamp()

        class Meta:
            table_name = "user_likes"
            primary_key = pw.CompositeKey("user", "image")

    class AIGenerationMeta(Frozen):
        image = pw.ForeignKeyField(
            Image, column_name="image_id", primary_key=True, on_delete="CASCADE"
        )
        model = pw.CharField(max_length=200, constraints=[not_blank("model")])
        prompt = pw.TextField(constraints=[not_blank("prompt")])
        negative_prompt = pw.TextField(null=True)
        seed = pw.BigIntegerField(null=True, constraints=[check("seed >= 0")])
        steps = pw.IntegerField(null=True, constraints=[check("steps > 0")])
        guidance_scale = pw.FloatField(null=True, constraints=[check("guidance_scale >= 0")])
        sampler = pw.CharField(max_length=64, null=True)
        created_at = timestamp()

        class Meta:
            table_name = "ai_generation_meta"

    class Analytics(Frozen):
        id = pw.AutoField()
        metric = pw.CharField(max_length=100, constraints=[not_blank("metric")])
        value = pw.DoubleField()
        category = pw.CharField(max_length=50, null=True)
        unit = pw.CharField(max_length=20, null=True)
        recorded_at = timestamp()

        class Meta:
            table_name = "analytics"

    return [User, Image, Tag, Album, ImageTag, AlbumImage, UserLike, AIGenerationMeta, Analytics]
