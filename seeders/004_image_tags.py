"""File each sample image under about three tags; ``tags.count`` follows through the triggers.

Tags are found by name, their natural key, since their ids are the database's to choose.
"""

from db.models import ImageTag, Tag

kind = "sample"  # demo data: db.setup --no-sample leaves it out

IMAGE_TAGS = {
    "img-misty-fjord-sunrise": ("landscape", "mountains", "golden-hour", "travel"),
    "img-shinjuku-alley-rain": ("street", "night", "urban", "travel"),
    "img-dewdrops-on-fern": ("macro", "nature", "minimalism"),
    "img-milky-way-delicate-arch": ("astrophotography", "night", "long-exposure", "landscape"),
    "img-barbican-stairwell-bw": ("architecture", "black-and-white", "minimalism"),
    "img-ai-neon-koi-pond": ("ai-art", "wildlife", "fantasy"),
    "img-ai-lighthouse-above-clouds": ("ai-art", "fantasy", "ocean"),
    "img-ai-astronaut-gardener": ("ai-art", "portrait"),
}


def run(db):
    names = {name for tags in IMAGE_TAGS.values() for name in tags}
    tag_ids = dict(Tag.select(Tag.name, Tag.id).where(Tag.name.in_(names)).tuples())
    rows = [
        {"image": image_id, "tag": tag_ids[name]}
        for image_id, tags in IMAGE_TAGS.items()
        for name in tags
    ]
    ImageTag.insert_many(rows).on_conflict_ignore().execute()
