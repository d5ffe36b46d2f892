"""Twenty photography tags, six of them trending; ``count`` is kept by the triggers."""

from db.models import Tag

kind = "sample"  # demo data: db.setup --no-sample leaves it out

TRENDING = ("landscape", "street", "night", "astrophotography", "golden-hour", "ai-art")

NAMES = (
    "landscape",
    "portrait",
    "street",
    "macro",
    "wildlife",
    "architecture",
    "black-and-white",
    "long-exposure",
    "night",
    "travel",
    "nature",
    "urban",
    "aerial",
    "minimalism",
    "astrophotography",
    "mountains",
    "ocean",
    "golden-hour",
    "ai-art",
    "fantasy",
)

TAGS = tuple({"name": name, "trending": name in TRENDING} for name in NAMES)


def run(db):
    # The unique name is the natural key: a tag already there is left as it is.
    Tag.insert_many(TAGS).on_conflict_ignore().execute()
