"""Small builders of valid rows, for tests that need a gallery to point at; ``models_on``
points the models at a database of a test's own for a block."""

from contextlib import contextmanager

from db.engines import open_database
from db.models import Album, Image, User, bind_models


@contextmanager
def models_on(url):
    """Yield the database of ``url`` with the models bound to it; close it afterwards."""
    database = open_database(url, create=False)
    bind_models(database)
    try:
        yield database
    finally:
        database.close()


def make_user(name="Ada", **fields):
    """Create a user named ``name`` (an editor, with an email derived from the name)."""
    return User.create(
        **{"email": f"{name.lower()}@example.com", "name": name, "role": "editor", **fields}
    )


def image_fields(uploader, title="Dawn over the bay", **fields):
    """Return the fields of a valid JPEG image uploaded by ``uploader``."""
    slug = "-".join(title.lower().split())
    return {
        "uploader": uploader,
        "title": title,
        "url": f"https://cdn.example.com/{slug}.jpg",
        "width": 1920,
        "height": 1080,
        "size": 482_113,
        "format": "JPEG",
        **fields,
    }


def make_image(uploader, title="Dawn over the bay", **fields):
    """Create a valid image uploaded by ``uploader``."""
    return Image.create(**image_fields(uploader, title, **fields))


def make_album(owner, **fields):
    """Create an album owned by ``owner``."""
    return Album.create(**{"created_by": owner, "title": "Seascapes", **fields})
