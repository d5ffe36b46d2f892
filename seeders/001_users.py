"""Five sample users: one admin, two editors who upload and curate, two visitors.

``uploads`` is left to the triggers of migration 003; the ids are fixed so that a
re-run (``db.seed --force``) finds the same rows and inserts nothing.
"""

from datetime import datetime

from db.models import User

kind = "sample"  # demo data: db.setup --no-sample leaves it out

AVATARS = "https://cdn.clonegallery.example/avatars"

USERS = (
    {
        "id": "user-maya-chen",
        "email": "maya.chen@example.com",
        "name": "Maya Chen",
        "role": "admin",
        "avatar": f"{AVATARS}/maya-chen-256.webp",
        "joined_at": datetime(2023, 1, 16, 9, 12),
        "views": 4210,
    },
    {
        "id": "user-diego-alvarez",
        "email": "diego.alvarez@example.com",
        "name": "Diego Alvarez",
        "role": "editor",
        "avatar": f"{AVATARS}/diego-alvarez-256.webp",
        "joined_at": datetime(2023, 4, 3, 18, 45),
        "views": 2875,
    },
    {
        "id": "user-amara-okafor",
        "email": "amara.okafor@example.com",
        "name": "Amara Okafor",
        "role": "editor",
        "avatar": f"{AVATARS}/amara-okafor-256.webp",
        "joined_at": datetime(2023, 9, 21, 11, 30),
        "views": 1968,
    },
    {
        "id": "user-liam-oconnor",
        "email": "liam.oconnor@example.com",
        "name": "Liam O'Connor",
        "role": "visitor",
        "avatar": f"{AVATARS}/liam-oconnor-256.webp",
        "joined_at": datetime(2024, 2, 11, 20, 5),
        "views": 312,
    },
    {
        "id": "user-sofia-rossi",
        "email": "sofia.rossi@example.com",
        "name": "Sofia Rossi",
        "role": "visitor",
        "avatar": None,  # has not picked one yet
        "joined_at": datetime(2024, 6, 30, 7, 58),
        "views": 87,
    },
)


def run(db):
    User.insert_many(USERS).on_conflict_ignore().execute()
