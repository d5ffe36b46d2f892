"""Who may see and do what in the gallery: CloneGallery's access rules, in one place.

    with acting_as(user):            # a User, or None for an anonymous visitor
        image.save()                 # checked: PermissionDenied when the rules say no
    Image.visible_to(user)           # the query helpers on the models use visible_filter
    can(user, "edit", album)         # ask before showing a button

The rules (docs/security.md, "Access rules", shows the same table; tests/test_access.py proves it):

- images and albums: anyone sees public ones; a signed-in user also sees their own
  private ones; an admin sees everything. A visitor creates, edits and deletes their
  own; an editor also manages any public one (but cannot make another user's private,
  which would hide it from them); an admin manages all of them.
- an image in an album, tagging an image, its AI generation parameters: whoever may
  edit the album (or image); an image goes into an album only if its curator may see it.
- tags (create, rename, delete): editors and admins.
- likes: a signed-in user likes images they may see, and removes their own likes.
- users: anyone signs up as a visitor; a user edits or deletes their own account and
  never their role; only an admin changes roles or manages other accounts.
- analytics: admins (the app records metrics from maintenance code, see as_system).

Writes through the models are checked against the acting user: ``save()`` and
``delete_instance()`` by the rule of their table (an edit must be allowed on the row
as stored and as it will be). Class-level write queries (``Model.insert``,
``insert_many``, ``update``, ``delete``...) skip per-row rules, so only an admin or
maintenance code may run them. A write with no acting user at all is refused: the app
says who acts, every time. Maintenance code (the invoke tasks, seeders, the gallery
generator) runs ``as_system()``. Raw SQL is outside the models: on PostgreSQL, migration
004's row-level security keeps private rows out of it too, keyed on the setting
``clonegallery.user_id`` that ``acting_as`` sets on the connection.
"""

from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import peewee as pw

from db.binding import database_proxy
from db.engines import engine_for
from db.errors import PermissionDenied

ADMIN, EDITOR, VISITOR = "admin", "editor", "visitor"
PUBLIC = "public"
SETTING = "clonegallery.user_id"  # read by migration 004's policies on PostgreSQL
ACTION_WORDS = {"change_role": "change the role of"}

_UNSET, _SYSTEM = object(), object()
_acting = ContextVar("clonegallery_acting", default=_UNSET)
_inside_instance_write = ContextVar("clonegallery_instance_write", default=False)


# --- Who acts -------------------------------------------------------------------------------


class Actor(NamedTuple):
    """Who acts, as they were when acting_as began (changing the User later changes
    nothing: a user who sets their own role to admin is still judged as what they were)."""

    id: str
    role: str
    email: str


@contextmanager
def acting_as(user, database=None):
    """Run the block as ``user`` (a User, or None for an anonymous visitor).

    On PostgreSQL the user's id is also set on the connection (``clonegallery.user_id``),
    which row-level security reads: pass the database, or bind the models first.
    """
    actor = None if user is None else Actor(user.id, user.role, user.email)
    try:
        with _set(_acting, actor):
            _claim_on_connection(database, actor)
            yield user
    finally:  # the connection speaks for whoever acted before (an outer block, or no one)
        _claim_on_connection(database, _current_or_none(), only_if_open=True)


def as_system():
    """Run the block as maintenance code: every write is allowed (seeders, tasks, tests)."""
    return _set(_acting, _SYSTEM)


def claim_acting_user(database):
    """Tell ``database``'s connection who acts now (the user of the enclosing
    ``acting_as``, or nobody): row-level security reads it there. For a second database
    the models read from (``db.models.reading_from``)."""
    _claim_on_connection(database, _current_or_none())


@contextmanager
def _set(variable, value):
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def _current_or_none():
    acting = _acting.get()
    return None if acting in (_UNSET, _SYSTEM) else acting


def _claim_on_connection(database, user, only_if_open=False):
    database = database or _bound_database()
    if only_if_open and (database is None or database.is_closed()):
        return
    if engine_for(database).row_level_security:  # policies read the acting user from it
        user_id = "" if user is None else str(user.id)
        database.execute_sql("SELECT set_config(%s, %s, false)", (SETTING, user_id))


def _bound_database():
    return database_proxy.obj


# --- Asking ---------------------------------------------------------------------------------


def can(user, action, row):
    """Return whether ``user`` (None: anonymous) may ``action`` the model instance ``row``:
    "view", "create", "edit", "delete" any row, "change_role" a User. To like an image is
    to create a UserLike; to manage tags, to create, edit or delete a Tag."""
    return _refusal(user, action, row) is None


def require(user, action, row):
    """Raise PermissionDenied, naming who, what and why, unless ``user`` may do it."""
    reason = _refusal(user, action, row)
    if reason is not None:
        doing = ACTION_WORDS.get(action, action)
        raise PermissionDenied(f"{_who(user)} may not {doing} {_what(row)}: {reason}")


def visible_filter(model, viewer):
    """The WHERE condition for rows of ``model`` (Image or Album) ``viewer`` may see."""
    if _role(viewer) == ADMIN:
        return pw.Value(1) == pw.Value(1)
    public = model.privacy == PUBLIC
    if viewer is None:
        return public
    return public | (getattr(model, model.OWNER) == viewer.id)


# --- Checking writes (called by db.models.BaseModel) ---------------------------------------


def check_save(row, inserting):
    if _inside_instance_write.get():
        return
    user = _acting_user(row)
    if user is _SYSTEM:
        return
    if inserting:
        require(user, "create", row)
        return
    stored = type(row).get_or_none(type(row)._meta.primary_key == row._pk)
    if stored is None:
        require(user, "create", row)
        return
    require(user, "edit", stored)
    after = type(row)(**{**stored.__data__, **row.__data__})
    if _value(after, "role") != _value(stored, "role"):
        require(user, "change_role", stored)
    reason = _refusal(user, "edit", after)
    if reason is not None:
        raise PermissionDenied(f"{_who(user)} may not make {_what(stored)} so: {reason}")


def check_delete(row):
    if _inside_instance_write.get():
        return
    user = _acting_user(row)
    if user is not _SYSTEM:
        require(user, "delete", row)


def check_query(model):
    """Class-level write queries skip per-row rules: only admins and maintenance code."""
    if _inside_instance_write.get():
        return
    user = _acting_user(model)
    if user is not _SYSTEM and _role(user) != ADMIN:
        raise PermissionDenied(
            f"{_who(user)} may not write {model._meta.table_name} with a class-level query "
            "(insert, update, delete): write row by row (save, delete_instance), whose rules "
            "are checked, or as an admin"
        )


def unwritten(row, action):
    """Return the PermissionDenied of a save or delete the database carried out on no row,
    where row-level security filters writes (PostgreSQL): a write that did nothing must
    never pass as done."""
    acting = _acting.get()
    if acting is _SYSTEM:
        return PermissionDenied(
            f"{action} of {_what(row)} changed no row: row-level security applies to the role "
            "this connection uses; maintenance code (as_system) needs the tables' owner"
        )
    return PermissionDenied(
        f"{action} of {_what(row)} changed no row: row-level security does not let "
        f"{_who(None if acting is _UNSET else acting)} do it (or the row is gone)"
    )


def instance_write():
    """Inside save()/delete_instance(), after their check: peewee's own queries pass."""
    return _set(_inside_instance_write, True)


def _acting_user(row_or_model):
    acting = _acting.get()
    if acting is _UNSET:
        raise PermissionDenied(
            f"no acting user for a write to {row_or_model._meta.table_name}: run it inside "
            "db.access.acting_as(user) (None for an anonymous visitor), or as_system() "
            "for maintenance code"
        )
    return acting


# --- The rules ------------------------------------------------------------------------------
# Each returns None when allowed, else the reason in words.


def _refusal(user, action, row):
    if user is _SYSTEM:
        return None
    rule = RULES.get(row._meta.table_name)
    if rule is None:
        return f"{row._meta.table_name} has no access rule yet (add one to db.access.RULES)"
    return rule(user, action, row)


def _content_rule(user, action, row):
    """images and albums."""
    if action == "view":
        return None if _may_see(user, row) else "it is private"
    if user is None:
        return "sign in first"
    if action == "create" and not (_owns(user, row) or _role(user) == ADMIN):
        return "only an admin creates content in another user's name"
    if _may_manage(user, row):
        return None
    if _role(user) == EDITOR:
        return "it is another user's private " + _singular(row)
    return "it is another user's"


def _curated_link_rule(parent_name, needs_to_see=None):
    """album_images, image_tags, ai_generation_meta: as editing their parent row."""

    def rule(user, action, row):
        if action == "view":
            return None if _may_see(user, getattr(row, parent_name)) else "it is private"
        if user is None:
            return "sign in first"
        parent = getattr(row, parent_name)
        if not _may_manage(user, parent):
            return f"{_what(parent)} is another user's"
        seen = getattr(row, needs_to_see) if needs_to_see else None
        if action == "create" and seen is not None and not _may_see(user, seen):
            return f"{_what(seen)} is private"
        return None

    return rule


def _tag_rule(user, action, row):
    if action == "view" or _role(user) in (ADMIN, EDITOR):
        return None
    return "only editors and admins manage tags"


def _like_rule(user, action, row):
    if action == "view":
        return None if _may_see(user, row.image) else "the image is private"
    if user is None:
        return "sign in first"
    if _role(user) != ADMIN and _value(row, "user") != user.id:
        return "it is another user's like"
    if action == "create" and not _may_see(user, row.image):
        return f"{_what(row.image)} is private"
    return None


def _user_rule(user, action, row):
    if action == "view":
        return None
    if _role(user) == ADMIN:
        return None
    if action == "create":
        return None if _value(row, "role") == VISITOR else "only an admin gives a role"
    if action == "change_role":
        return "only an admin may"
    if user is not None and _value(row, "id") == user.id:
        return None
    return "it is another user's account"


def _admin_rule(user, action, row):
    return None if action == "view" or _role(user) == ADMIN else "only admins may"


RULES = {
    "images": _content_rule,
    "albums": _content_rule,
    "album_images": _curated_link_rule("album", needs_to_see="image"),
    "image_tags": _curated_link_rule("image"),
    "ai_generation_meta": _curated_link_rule("image"),
    "tags": _tag_rule,
    "user_likes": _like_rule,
    "users": _user_rule,
    "analytics": _admin_rule,
}


def _may_see(user, row):
    return _value(row, "privacy") == PUBLIC or _role(user) == ADMIN or _owns(user, row)


def _may_manage(user, row):
    if user is None:
        return False
    if _role(user) == ADMIN or _owns(user, row):
        return True
    return _role(user) == EDITOR and _value(row, "privacy") == PUBLIC


def _owns(user, row):
    return user is not None and _value(row, row.OWNER) == user.id


def _role(user):
    return None if user is None or user is _SYSTEM else user.role


def _value(row, name):
    """A column's raw value (a foreign key's id, not the row it points at)."""
    return row.__data__.get(name)


def _who(user):
    return "an anonymous visitor" if user is None else f"{user.role} {user.email}"


def _what(row):
    key = row._pk if not isinstance(row._pk, tuple) else "/".join(map(str, row._pk))
    return f"{_singular(row)} {key}" if key is not None else f"a new {_singular(row)}"


def _singular(row):
    return NOUNS.get(row._meta.table_name, row._meta.table_name)


NOUNS = {
    "images": "image",
    "albums": "album",
    "album_images": "album entry",
    "image_tags": "image tag",
    "ai_generation_meta": "generation record",
    "tags": "tag",
    "user_likes": "like",
    "users": "user",
    "analytics": "measurement",
}
