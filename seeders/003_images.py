"""Eight sample images, three of them AI-generated with how they were made.

Uploaders are found by email, the users' natural key. ``users.uploads`` follows
through the triggers. Sizes are in bytes and fit each format: a 24 MP JPEG weighs
megabytes, an AVIF of the same scene a fraction of it.
"""

from datetime import datetime

from db.models import AIGenerationMeta, Image, User

kind = "sample"  # demo data: db.setup --no-sample leaves it out

CDN = "https://cdn.clonegallery.example"


def _files(image_id, extension):
    """Return the url and thumbnail of an image on the CDN."""
    return {
        "url": f"{CDN}/images/{image_id}.{extension}",
        "thumbnail": f"{CDN}/thumbs/{image_id}-480.webp",
    }


IMAGES = (
    {
        "id": "img-misty-fjord-sunrise",
        "title": "Misty Fjord at Sunrise",
        "caption": "First light over Nærøyfjord, shot from the ferry before the fog lifted.",
        "alt_text": "A narrow fjord between steep green mountains, low mist on the water "
        "and the sky turning orange behind the peaks.",
        **_files("img-misty-fjord-sunrise", "jpg"),
        "uploader": "diego.alvarez@example.com",
        "uploaded_at": datetime(2024, 1, 14, 7, 42),
        "privacy": "public",
        "views": 1843,
        "is_ai_generated": False,
        "width": 6000,
        "height": 4000,
        "size": 9_412_736,
        "format": "JPEG",
    },
    {
        "id": "img-shinjuku-alley-rain",
        "title": "Rain in a Shinjuku Alley",
        "caption": "Omoide Yokocho on a wet Tuesday night, 1/60 s handheld.",
        "alt_text": "A narrow alley at night lined with small bars, red paper lanterns "
        "reflected in the wet pavement and a person with a clear umbrella walking away.",
        **_files("img-shinjuku-alley-rain", "jpg"),
        "uploader": "amara.okafor@example.com",
        "uploaded_at": datetime(2024, 2, 27, 22, 18),
        "privacy": "public",
        "views": 2976,
        "is_ai_generated": False,
        "width": 4000,
        "height": 6000,
        "size": 7_864_503,
        "format": "JPEG",
    },
    {
        "id": "img-dewdrops-on-fern",
        "title": "Dewdrops on a Fern Frond",
        "caption": "Backyard macro with a phone and a clip-on lens, 6 a.m.",
        "alt_text": "Close-up of a curled green fern tip covered in round water droplets, "
        "each reflecting the pale morning sky.",
        **_files("img-dewdrops-on-fern", "heic"),
        "uploader": "maya.chen@example.com",
        "uploaded_at": datetime(2024, 4, 9, 6, 55),
        "privacy": "public",
        "views": 1204,
        "is_ai_generated": False,
        "width": 4032,
        "height": 3024,
        "size": 2_418_377,
        "format": "HEIC",
    },
    {
        "id": "img-milky-way-delicate-arch",
        "title": "Milky Way over Delicate Arch",
        "caption": "Twenty stacked 15 s exposures at f/2.8, ISO 6400, new moon in May.",
        "alt_text": "A sandstone arch silhouetted against a starry night sky, "
        "the band of the Milky Way rising through the opening.",
        **_files("img-milky-way-delicate-arch", "avif"),
        "uploader": "diego.alvarez@example.com",
        "uploaded_at": datetime(2024, 5, 18, 3, 10),
        "privacy": "public",
        "views": 3318,
        "is_ai_generated": False,
        "width": 3840,
        "height": 2560,
        "size": 1_287_042,
        "format": "AVIF",
    },
    {
        "id": "img-barbican-stairwell-bw",
        "title": "Concrete Stairwell, Barbican",
        "caption": "Draft of a black-and-white series on brutalist London.",
        "alt_text": "Black-and-white view looking down a spiral concrete staircase, "
        "its curves forming a shell-like pattern of light and shadow.",
        **_files("img-barbican-stairwell-bw", "webp"),
        "uploader": "diego.alvarez@example.com",
        "uploaded_at": datetime(2024, 7, 2, 14, 36),
        "privacy": "private",
        "views": 42,
        "is_ai_generated": False,
        "width": 2560,
        "height": 1707,
        "size": 642_918,
        "format": "WEBP",
    },
    {
        "id": "img-ai-neon-koi-pond",
        "title": "Neon Koi Pond",
        "caption": "AI-generated with Stable Diffusion XL.",
        "alt_text": "Digital illustration seen from above: orange and white koi swimming "
        "in a dark pond, lit by glowing pink and cyan water lilies.",
        **_files("img-ai-neon-koi-pond", "png"),
        "uploader": "maya.chen@example.com",
        "uploaded_at": datetime(2024, 8, 21, 16, 4),
        "privacy": "public",
        "views": 1571,
        "is_ai_generated": True,
        "width": 1024,
        "height": 1024,
        "size": 1_742_336,
        "format": "PNG",
    },
    {
        "id": "img-ai-lighthouse-above-clouds",
        "title": "Lighthouse Above the Clouds",
        "caption": "AI-generated sketch for a book cover, SDXL Turbo.",
        "alt_text": "Digital painting of a white lighthouse standing on a floating rock "
        "above a sea of clouds at dusk, its beam crossing a purple sky.",
        **_files("img-ai-lighthouse-above-clouds", "webp"),
        "uploader": "amara.okafor@example.com",
        "uploaded_at": datetime(2024, 10, 5, 10, 27),
        "privacy": "private",
        "views": 9,
        "is_ai_generated": True,
        "width": 512,
        "height": 512,
        "size": 61_442,
        "format": "WEBP",
    },
    {
        "id": "img-ai-astronaut-gardener",
        "title": "Portrait of an Astronaut Gardener",
        "caption": "AI-generated with FLUX.1 [dev].",
        "alt_text": "Photorealistic portrait of an astronaut with the visor up, kneeling "
        "in a greenhouse on Mars and holding a tomato seedling in gloved hands.",
        **_files("img-ai-astronaut-gardener", "png"),
        "uploader": "amara.okafor@example.com",
        "uploaded_at": datetime(2024, 11, 30, 19, 49),
        "privacy": "public",
        "views": 887,
        "is_ai_generated": True,
        "width": 832,
        "height": 1216,
        "size": 1_905_114,
        "format": "PNG",
    },
)

AI_GENERATION_META = (
    {
        "image": "img-ai-neon-koi-pond",
        "model": "stabilityai/stable-diffusion-xl-base-1.0",
        "prompt": "top-down view of koi fish in a dark pond, glowing neon water lilies, "
        "pink and cyan light, highly detailed, digital art",
        "negative_prompt": "blurry, low quality, watermark, text, oversaturated",
        "seed": 2_849_317_650,
        "steps": 30,
        "guidance_scale": 7.0,
        "sampler": "DPM++ 2M Karras",
        "created_at": datetime(2024, 8, 21, 15, 51),
    },
    {
        "image": "img-ai-lighthouse-above-clouds",
        "model": "stabilityai/sdxl-turbo",
        "prompt": "a white lighthouse on a floating island above a sea of clouds, dusk, "
        "purple sky, light beam, matte painting",
        "negative_prompt": None,  # SDXL Turbo runs without classifier-free guidance
        "seed": 73_021,
        "steps": 4,
        "guidance_scale": 0.0,
        "sampler": "Euler a",
        "created_at": datetime(2024, 10, 5, 10, 19),
    },
    {
        "image": "img-ai-astronaut-gardener",
        "model": "black-forest-labs/FLUX.1-dev",
        "prompt": "photorealistic portrait of an astronaut kneeling in a Martian greenhouse, "
        "visor raised, holding a tomato seedling, soft window light, 85mm",
        "negative_prompt": None,  # FLUX.1 takes no negative prompt
        "seed": 1_093_847_562,
        "steps": 28,
        "guidance_scale": 3.5,
        "sampler": "Euler",
        "created_at": datetime(2024, 11, 30, 19, 31),
    },
)


def run(db):
    emails = {image["uploader"] for image in IMAGES}
    user_ids = dict(User.select(User.email, User.id).where(User.email.in_(emails)).tuples())
    rows = [{**image, "uploader": user_ids[image["uploader"]]} for image in IMAGES]
    Image.insert_many(rows).on_conflict_ignore().execute()
    AIGenerationMeta.insert_many(AI_GENERATION_META).on_conflict_ignore().execute()
