"""Index the foreign keys and the columns the gallery filters and sorts by.

A foreign key that leads a primary key is already indexed by it and gets no
index of its own: image_tags.image_id, album_images.album_id, user_likes.user_id,
ai_generation_meta.image_id; images.uploader_id leads (uploader_id, uploaded_at).
Names are explicit and equal to the ones Peewee derives for db/models.py.
"""

# (index name, table, columns), frozen.
INDEXES = (
    ("images_uploader_id_uploaded_at", "images", ("uploader_id", "uploaded_at")),
    ("images_uploaded_at", "images", ("uploaded_at",)),
    ("images_privacy", "images", ("privacy",)),
    ("tags_trending", "tags", ("trending",)),
    ("albums_cover_image_id", "albums", ("cover_image_id",)),
    ("albums_created_by", "albums", ("created_by",)),
    ("image_tags_tag_id", "image_tags", ("tag_id",)),
    ("album_images_image_id", "album_images", ("image_id",)),
    ("album_images_album_id_position", "album_images", ("album_id", "position")),
    ("user_likes_image_id", "user_likes", ("image_id",)),
    ("analytics_metric_recorded_at", "analytics", ("metric", "recorded_at")),
)


def up(migrator, db):
    migrator.migrate(
        *(migrator.add_index(table, columns, name=name) for name, table, columns in INDEXES)
    )


def down(migrator, db):
    migrator.migrate(*(migrator.drop_index(table, name) for name, table, _ in reversed(INDEXES)))
