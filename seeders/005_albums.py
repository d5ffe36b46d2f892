"""Six themed albums, each with its images in order and one of them as its cover.

Owners are found by email. ``albums.image_count`` follows through the triggers; an
album's images were all added when it was made, so ``added_at`` is its ``created_at``.
"""

from datetime import datetime

from db.models import Album, AlbumImage, User

kind = "sample"  # demo data: db.setup --no-sample leaves it out

ALBUMS = (
    {
        "id": "album-wild-places",
        "title": "Wild Places",
        "description": "Landscapes far from the nearest road: fjords, deserts and dew.",
        "created_by": "diego.alvarez@example.com",
        "privacy": "public",
        "created_at": datetime(2024, 5, 20, 9, 0),
        "cover_image": "img-misty-fjord-sunrise",
        "images": (
            "img-misty-fjord-sunrise",
            "img-milky-way-delicate-arch",
            "img-dewdrops-on-fern",
        ),
    },
    {
        "id": "album-after-dark",
        "title": "After Dark",
        "description": "Neon, starlight and rain: what the camera sees once the sun is down.",
        "created_by": "amara.okafor@example.com",
        "privacy": "public",
        "created_at": datetime(2024, 8, 25, 21, 15),
        "cover_image": "img-shinjuku-alley-rain",
        "images": (
            "img-shinjuku-alley-rain",
            "img-milky-way-delicate-arch",
            "img-ai-neon-koi-pond",
        ),
    },
    {
        "id": "album-dreamt-by-machines",
        "title": "Dreamt by Machines",
        "description": "A showcase of AI-generated work, with the prompts that made it.",
        "created_by": "maya.chen@example.com",
        "privacy": "public",
        "created_at": datetime(2024, 12, 2, 10, 30),
        "cover_image": "img-ai-neon-koi-pond",
        "images": ("img-ai-neon-koi-pond", "img-ai-astronaut-gardener"),
    },
    {
        "id": "album-concrete-and-light",
        "title": "Concrete and Light",
        "description": "Work in progress: brutalist buildings and the streets around them.",
        "created_by": "diego.alvarez@example.com",
        "privacy": "private",
        "created_at": datetime(2024, 7, 3, 8, 20),
        "cover_image": "img-barbican-stairwell-bw",
        "images": ("img-barbican-stairwell-bw", "img-shinjuku-alley-rain"),
    },
    {
        "id": "album-studio-drafts",
        "title": "Studio Drafts",
        "description": "Cover ideas for the spring catalogue, not ready to share.",
        "created_by": "amara.okafor@example.com",
        "privacy": "private",
        "created_at": datetime(2024, 12, 1, 17, 45),
        "cover_image": "img-ai-lighthouse-above-clouds",
        "images": ("img-ai-lighthouse-above-clouds", "img-ai-astronaut-gardener"),
    },
    {
        "id": "album-sofias-favourites",
        "title": "Sofia's Favourites",
        "description": "The pictures I keep coming back to.",
        "created_by": "sofia.rossi@example.com",
        "privacy": "public",
        "created_at": datetime(2024, 12, 10, 19, 2),
        "cover_image": "img-milky-way-delicate-arch",
        "images": (
            "img-milky-way-delicate-arch",
            "img-shinjuku-alley-rain",
            "img-dewdrops-on-fern",
            "img-misty-fjord-sunrise",
        ),
    },
)


def run(db):
    emails = {album["created_by"] for album in ALBUMS}
    user_ids = dict(User.select(User.email, User.id).where(User.email.in_(emails)).tuples())
    albums = [
        {**_without_images(album), "created_by": user_ids[album["created_by"]]} for album in ALBUMS
    ]
    links = [
        {
            "album": album["id"],
            "image": image_id,
            "position": position,
            "added_at": album["created_at"],
        }
        for album in ALBUMS
        for position, image_id in enumerate(album["images"])
    ]
    Album.insert_many(albums).on_conflict_ignore().execute()
    AlbumImage.insert_many(links).on_conflict_ignore().execute()


def _without_images(album):
    return {column: value for column, value in album.items() if column != "images"}
