"""Index the foreign keys and the columns the gallery filters and sorts by.

A foreign key that leads a primary key is already indexed by it and gets no
index of its own: image_tags.image_id, album_images.album_id, user_likes.user_id,
ai_generation_meta.image_id; images.uploader_id leads (uploader_id, uploaded_at).
Names are explicit and equal to the ones Peewee derives for db/models.py.

MySQL needs every foreign key to lead some index. Where none does, InnoDB adds
one when 001 creates the table, named after the column, and drops it silently
when an index of ours takes over; but it refuses to drop our index while that
is the key's only one, and it drops only the indexes it added itself. So on
MySQL ``down`` first puts the column's own index back, and ``up`` removes it
when it is still there (after a ``down``), leaving the schema 001 and 002 left.
"""

import peewee as pw

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

# (table, column): the foreign keys that no primary key leads, only an index above; frozen.
FOREIGN_KEYS_LED_HERE = (
    ("images", "uploader_id"),
    ("albums", "cover_image_id"),
    ("albums", "created_by"),
    ("image_tags", "tag_id"),
    ("album_images", "image_id"),
    ("user_likes", "image_id"),
)


def up(migrator, db):
    migrator.migrate(
        *(migrator.add_index(table, columns, name=name) for name, table, columns in INDEXES)
    )
    if isinstance(db, pw.MySQLDatabase):
        migrator.migrate(
            *(
                migrator.drop_index(table, column)
                for table, column in FOREIGN_KEYS_LED_HERE
                if column in {index.name for index in db.get_indexes(table)}
            )
        )


def down(migrator, db):
    if isinstance(db, pw.MySQLDatabase):
        migrator.migrate(
            *(
                migrator.add_index(table, (column,), name=column)
                for table, column in FOREIGN_KEYS_LED_HERE
            )
        )
    migrator.migrate(*(migrator.drop_index(table, name) for name, table, _ in reversed(INDEXES)))
