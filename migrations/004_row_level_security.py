"""Let PostgreSQL itself hide private images and albums from the wrong users.

Who is acting is the connection's ``clonegallery.user_id`` setting, which the application
sets once it knows the user (``SELECT set_config('clonegallery.user_id', '<id>', false)``);
unset or empty means anonymous. Two functions read it for the policies:

    clonegallery_acting_user()   the setting, or NULL when anonymous
    clonegallery_acting_role()   that user's users.role, or NULL (anonymous, unknown user)

The rows that belong to an image or album — ``album_images``, ``image_tags``,
``user_likes``, ``ai_generation_meta`` — get one policy each, ``<table>_of_visible_rows``:
seen and written only when the acting user may see the image (and the album) they link.

``images`` and ``albums`` get row-level security and two permissive policies each, which
PostgreSQL ORs together (a row's owner is its ``uploader_id`` or ``created_by``):

    <table>_visible   SELECT   public rows, the acting user's own, everything for an admin
    <table>_writable  ALL      the acting user's own rows, everything for an admin, and
                               public rows for an editor; the same test on the new row
                               (WITH CHECK), so an editor cannot make another's row private

and a restrictive one, which every INSERT must also pass:

    <table>_created_as_oneself  INSERT  the new row is the acting user's, or they are an
                                        admin: only admins create in another user's name

Each function call in a policy is wrapped in ``(SELECT ...)``: PostgreSQL then runs it
once per query (an InitPlan) instead of once per row, where the role's lookup in users
would cost a query per image scanned.

Row-level security is enabled, not forced: the tables' owner, who runs the migrations,
backups and transfers, still reads and writes every row. The application must connect as
another role, one without BYPASSRLS, for the policies to apply (README, "Row-level
security on PostgreSQL").

The counter triggers of 003 run PL/pgSQL functions as the role whose statement fired
them; the albums policies would filter their UPDATE of albums.image_count, and the count
would silently stay put (e.g. when a user takes their image out of another user's album).
So they become SECURITY DEFINER, running as their owner (the tables' owner), with
search_path fixed to the schema they were created in (then pg_temp, last, so that no
temporary table can stand in for one of ours); ``down`` makes them SECURITY INVOKER again.
clonegallery_acting_role() gets the same fixed search_path, for the same reason.

The functions are created with CREATE OR REPLACE: ``db.reset`` and ``db.transfer
--force`` drop the tables (and the policies with them) but leave these functions, so a
later run of this migration takes them over instead of failing.

SQLite and MySQL/MariaDB have no row-level security: ``up`` and ``down`` do nothing there,
and the model layer's access rules are what enforce who sees and writes what.
"""

import peewee as pw

SETTING = "clonegallery.user_id"
ACTING_USER = "clonegallery_acting_user"
ACTING_ROLE = "clonegallery_acting_role"
# (table, the column naming the user who owns a row), frozen.
OWNED_TABLES = (("images", "uploader_id"), ("albums", "created_by"))
# Tables whose rows belong to images (and albums): (table, ((parent, column), ...)), frozen.
LINKED_TABLES = (
    ("album_images", (("images", "image_id"), ("albums", "album_id"))),
    ("image_tags", (("images", "image_id"),)),
    ("user_likes", (("images", "image_id"),)),
    ("ai_generation_meta", (("images", "image_id"),)),
)
# The PL/pgSQL functions of 003's counter triggers, frozen.
TRIGGER_FUNCTIONS = (
    "image_tags_after_insert",
    "image_tags_after_delete",
    "image_tags_after_update",
    "album_images_after_insert",
    "album_images_after_delete",
    "album_images_after_update",
    "images_after_insert",
    "images_after_delete",
    "images_after_update",
)


def up(migrator, db):
    if isinstance(db, pw.PostgresqlDatabase):
        statements = [create for create, _ in postgres_statements(_current_schema(db))]
        migrator.migrate(*(migrator.sql(statement) for statement in statements))


def down(migrator, db):
    if isinstance(db, pw.PostgresqlDatabase):
        statements = [drop for _, drop in reversed(postgres_statements(_current_schema(db)))]
        migrator.migrate(*(migrator.sql(statement) for statement in statements))


def postgres_statements(schema):
    """Return [(statement for up, statement undoing it for down)], in the order up runs them."""
    return [
        *acting_functions(schema),
        *(statement for table, owner in OWNED_TABLES for statement in policies(table, owner)),
        *(
            statement
            for table, parents in LINKED_TABLES
            for statement in link_policy(table, parents)
        ),
        *trigger_functions_as_owner(schema),
    ]


def acting_functions(schema):
    """Return the (CREATE, DROP) pairs of the functions naming the acting user and role."""
    acting_user = (
        f"CREATE OR REPLACE FUNCTION {ACTING_USER}() RETURNS text "
        "LANGUAGE sql STABLE PARALLEL SAFE "
        f"AS $$ SELECT NULLIF(current_setting('{SETTING}', true), '') $$"
    )
    acting_role = (
        f"CREATE OR REPLACE FUNCTION {ACTING_ROLE}() RETURNS text "
        f"LANGUAGE sql STABLE PARALLEL SAFE SET search_path = {schema}, pg_temp "
        f"AS $$ SELECT role::text FROM users WHERE id = {ACTING_USER}() $$"
    )
    return [
        (acting_user, f"DROP FUNCTION {ACTING_USER}()"),
        (acting_role, f"DROP FUNCTION {ACTING_ROLE}()"),
    ]


def policies(table, owner):
    """Return the (up, down) pairs that put the table under its two policies."""
    user = f"(SELECT {ACTING_USER}())"
    role = f"(SELECT {ACTING_ROLE}())"
    visible = f"privacy = 'public' OR {owner} = {user} OR {role} = 'admin'"
    writable = f"{owner} = {user} OR {role} = 'admin' OR ({role} = 'editor' AND privacy = 'public')"
    return [
        (
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ),
        (
            f"CREATE POLICY {table}_visible ON {table} FOR SELECT USING ({visible})",
            f"DROP POLICY {table}_visible ON {table}",
        ),
        (
            f"CREATE POLICY {table}_writable ON {table} FOR ALL "
            f"USING ({writable}) WITH CHECK ({writable})",
            f"DROP POLICY {table}_writable ON {table}",
        ),
        (
            f"CREATE POLICY {table}_created_as_oneself ON {table} AS RESTRICTIVE FOR INSERT "
            f"WITH CHECK ({owner} = {user} OR {role} = 'admin')",
            f"DROP POLICY {table}_created_as_oneself ON {table}",
        ),
    ]


def link_policy(table, parents):
    """Return the (up, down) pairs that show and let write a link row only when the acting
    user may see every row it links (the EXISTS reads images and albums under their own
    policies): a private image's tags, likes, album places and prompt stay its owner's."""
    visible = " AND ".join(
        f"EXISTS (SELECT FROM {parent} WHERE {parent}.id = {table}.{column})"
        for parent, column in parents
    )
    return [
        (
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ),
        (
            f"CREATE POLICY {table}_of_visible_rows ON {table} FOR ALL "
            f"USING ({visible}) WITH CHECK ({visible})",
            f"DROP POLICY {table}_of_visible_rows ON {table}",
        ),
    ]


def trigger_functions_as_owner(schema):
    """Return the (up, down) pairs that make 003's trigger functions run as their owner."""
    return [
        (
            f"ALTER FUNCTION {name}() SECURITY DEFINER SET search_path = {schema}, pg_temp",
            f"ALTER FUNCTION {name}() SECURITY INVOKER RESET search_path",
        )
        for name in TRIGGER_FUNCTIONS
    ]


def _current_schema(db):
    """Return the schema the migration runs in, quoted for SQL where it needs to be."""
    return db.execute_sql("SELECT quote_ident(current_schema())").fetchone()[0]
