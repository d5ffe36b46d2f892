"""MySQL and MariaDB backups: ``mariadb-dump --single-transaction`` (or ``mysqldump``),
loaded with the ``mariadb`` (or ``mysql``) client, swapped in by one RENAME TABLE.

MySQL cannot share a snapshot with the dump tool, so the manifest's row counts are
those of the dump itself: it is loaded into a scratch database right away and
counted, which also verifies it. The password reaches the tools through a private
``--defaults-extra-file``, never the command line.

A dump is untrusted input: whoever can write a file into the backups folder could add
``DROP DATABASE other;`` or a client command such as ``\\! rm -rf ~`` to it. So it is
loaded by a temporary account whose only rights are on the database being loaded
(created with a random password, dropped afterwards), with the client's ``--sandbox``
mode (no shell, no file access) and ``--local-infile=0`` (``LOAD DATA LOCAL`` cannot
read the client's files). A configured user that cannot create accounts loads as
itself, still sandboxed. The triggers mariadb-dump writes name their definer (the user
who made the backup), which only a privileged account may set: the loader drops those
clauses, and once loaded the triggers are created again as the configured user's.

A swap moves every table at once with one RENAME TABLE statement (atomic in MySQL and
MariaDB). Triggers cannot move between databases, so each side's trigger definitions
are first written into a table of its own (PARKED_TRIGGERS), which moves along with the
others, and the triggers dropped; after the RENAME the live database's parked triggers
are created again. A restore killed in between leaves the parked table in the live
database, and the next command that opens it finishes the job
(MySQLEngine.finish_interrupted_restore).
"""

import re
import secrets
import subprocess
import tempfile
from contextlib import contextmanager, suppress

import peewee

from db.backups.files import (
    CHUNK_BYTES,
    compress_stream,
    decompressed_chunks,
)
from db.backups.manifest import new_manifest
from db.backups.servers import ServerBackups, orphan_problems, schema_version, table_rows
from db.clients import (
    MYSQL_CLIENT_PACKAGE,
    MYSQL_CLIENT_TOOLS,
    find_tool,
    mysql_dump_command,
    mysql_options_file,
    run_tool,
    tool_complaint,
    tool_environment,
    with_credentials,
)
from db.engines import engine_for_url
from db.engines.base import database_name_of, quoted
from db.engines.mysql import (
    PARKED_TRIGGERS,
    base_tables,
    catalogue_names,
    trigger_names,
    unpark_triggers,
)
from db.errors import BackupError, ConfigError, ToolFailed, one_line

# Where a swap keeps the triggers it has to drop while their tables move (see swap).
# The temporary accounts that load backups: this prefix and random letters.
LOADER_PREFIX = "cg_load_"
# mariadb-dump's definer of a trigger, at the start of a line (a newline inside a value
# is written as \n, so a line never starts inside one).
TRIGGER_DEFINER = re.compile(
    rb"\n(/\*!50003 CREATE\*/ )/\*!50017 DEFINER=`(?:[^`\n]|``)*`@`(?:[^`\n]|``)*`\*/ "
)
SANDBOX_MISSING = re.compile(r"unknown (variable|option).*sandbox", re.IGNORECASE)


class MySQLBackups(ServerBackups):
    engine = "mysql"
    suffix = ".sql"

    def dump(self, database, url, partial, compress):
        with mysql_options_file(url) as options:
            flags = ("--single-transaction", "--hex-blob", "--skip-add-locks")
            command = mysql_dump_command(options, url, *flags)
            content = None
            with open(partial, "r+b") as output:
                if compress:
                    content = _dump_compressed(command, output)
                else:
                    run_tool(command, stdout=output)
        scratch = self.side_database(url, "counting")
        with self.fresh_database(scratch), self.loading_account(scratch) as loader:
            self.load(loader, partial, {"compressed": compress})
            counts, version, sound = _counted(loader)
        # Verified as made, unless a row points at no parent row (db.verify then says which).
        return new_manifest(partial, self.engine, version, counts, content, verified=sound)

    @contextmanager
    def loading_account(self, url):
        """Yield the URL of a temporary account whose only rights are on the database of
        ``url`` (or ``url`` itself when its user cannot create accounts); afterwards make
        the triggers it created the configured user's, and drop the account."""
        schema = database_name_of(url)
        with engine_for_url(url).maintenance(url) as server:
            account = _temporary_account(server, schema)
        if account is None:
            yield url
            return
        user, password = account
        try:
            yield with_credentials(url, user, password)
        finally:
            with engine_for_url(url).maintenance(url) as server:
                try:
                    _adopt_triggers(server, schema, user)
                finally:
                    server.execute_sql("DROP USER IF EXISTS %s@'%%'", (user,))

    def load(self, url, path, manifest):
        client = find_tool(*MYSQL_CLIENT_TOOLS, package=MYSQL_CLIENT_PACKAGE)
        with mysql_options_file(url) as options:
            command = [
                client,
                f"--defaults-extra-file={options}",
                "--default-character-set=utf8mb4",
                "--sandbox",  # no shell command, no file read or written by the client
                "--local-infile=0",  # nor by LOAD DATA LOCAL
                "--one-database",  # statements for other databases are skipped
                database_name_of(url),
            ]
            chunks = decompressed_chunks(path) if manifest.get("compressed") else _file_chunks(path)
            try:
                _feed(command, _without_definers(chunks))
            except ToolFailed as exc:
                if SANDBOX_MISSING.search(str(exc)):
                    raise ConfigError(
                        f"{client} has no --sandbox mode, without which a backup could run "
                        "shell commands: install the MariaDB client 10.5.25 or later "
                        "(Debian/Ubuntu: apt install mariadb-client)"
                    ) from exc
                raise

    def swap(self, url, fresh_url, timeout):
        engine = engine_for_url(url)
        live, fresh = database_name_of(url), database_name_of(fresh_url)
        retired_url = self.side_database(url, "retired")
        if not engine.exists(url):
            engine.create(url)
        with self.fresh_database(retired_url), engine.maintenance(url) as server:
            server.execute_sql("SET SESSION lock_wait_timeout = %s", (timeout,))
            retired = database_name_of(retired_url)
            try:
                _park_triggers(server, fresh)
                _park_triggers(server, live)
                server.execute_sql(
                    "RENAME TABLE "
                    + ", ".join(_moves(server, live, retired) + _moves(server, fresh, live))
                )
            except peewee.DatabaseError as exc:
                unpark_triggers(server, live)
                raise BackupError(
                    f"database {live} stayed locked by other connections for more than "
                    f"{timeout} s ({one_line(exc)}); stop the app and retry; nothing restored"
                ) from exc
            unpark_triggers(server, live)


def _park_triggers(server, schema):
    """Write the schema's trigger definitions into its PARKED_TRIGGERS table, then drop
    the triggers (they cannot be renamed into another database). The table moves with
    the others, so whoever ends up live can always get its triggers back."""
    table = f"{quoted(server, schema)}.{quoted(server, PARKED_TRIGGERS)}"
    server.execute_sql(
        f"CREATE TABLE IF NOT EXISTS {table} (name VARCHAR(64) PRIMARY KEY, definition TEXT)"
    )
    for name in trigger_names(server, schema):
        definition = _trigger_definition(server, schema, name)
        server.execute_sql(
            f"REPLACE INTO {table} (name, definition) VALUES (%s, %s)", (name, definition)
        )
        server.execute_sql(f"DROP TRIGGER {quoted(server, schema)}.{quoted(server, name)}")


def _temporary_account(server, schema):
    """Create an account with every right on ``schema`` and none elsewhere; return its
    (user, password), or None when the connected user may not create one."""
    user, password = LOADER_PREFIX + secrets.token_hex(6), secrets.token_urlsafe(24)
    try:
        server.execute_sql("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    except peewee.DatabaseError:
        return None
    try:
        # In GRANT, _ and % in a database name are wildcards: escaped, it names only ours.
        pattern = re.sub(r"([\\_%])", r"\\\1", schema)
        on = f"{quoted(server, pattern)}.*"
        server.execute_sql(f"GRANT ALL PRIVILEGES ON {on} TO %s@'%%'", (user,))
    except peewee.DatabaseError:
        server.execute_sql("DROP USER IF EXISTS %s@'%%'", (user,))
        return None
    return user, password


def _adopt_triggers(server, schema, user):
    """Create again, as the connected user's, the triggers that the account ``user``
    created in ``schema`` (they would stop working once it is dropped)."""
    definer = f"CREATE DEFINER=`{user}`@`%` "
    if schema not in catalogue_names(server, "schema_name", "schemata", "schema_name = %s", schema):
        return
    server.execute_sql(f"USE {quoted(server, schema)}")
    for name in trigger_names(server, schema):
        sql_mode, definition = _trigger_definition(server, schema, name, with_sql_mode=True)
        if not definition.startswith(definer):
            continue
        server.execute_sql(f"DROP TRIGGER {quoted(server, schema)}.{quoted(server, name)}")
        server.execute_sql("SET SESSION sql_mode = %s", (sql_mode,))
        # The raw cursor: a % in the trigger's body must not be read as a parameter.
        server.cursor().execute("CREATE " + definition[len(definer) :])


def _file_chunks(path):
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def _without_definers(chunks):
    """Yield the dump ``chunks`` without mariadb-dump's DEFINER clauses of triggers (the
    loading account may not name another definer); every other byte as it was."""
    pending = b"\n"  # so that the first line starts with a newline, as every other does
    first = True
    for chunk in chunks:
        pending += chunk
        cut = pending.rfind(b"\n")
        if cut <= 0:
            continue
        lines, pending = pending[:cut], pending[cut:]
        lines = TRIGGER_DEFINER.sub(rb"\n\1", lines)
        yield lines[1:] if first else lines
        first = False
    rest = TRIGGER_DEFINER.sub(rb"\n\1", pending)
    yield rest[1:] if first else rest


def _counted(url):
    """Return the row counts, schema version and soundness (no orphan rows) of a loaded
    dump."""
    database = engine_for_url(url).connect(url)
    try:
        return table_rows(database), schema_version(database), not orphan_problems(database)
    finally:
        database.close()


def _moves(server, source, target):
    tables = base_tables(server, source)
    source, target = quoted(server, source), quoted(server, target)
    return [f"{source}.{quoted(server, t)} TO {target}.{quoted(server, t)}" for t in tables]


def _trigger_definition(server, schema, name, with_sql_mode=False):
    row = server.execute_sql(
        f"SHOW CREATE TRIGGER {quoted(server, schema)}.{quoted(server, name)}"
    ).fetchone()
    # (Trigger, sql_mode, SQL Original Statement, ...)
    return (row[1], row[2]) if with_sql_mode else row[2]


def _dump_compressed(command, output):
    """Run the dump tool, compressing its output into ``output``; return the (SHA-256,
    size) of the uncompressed dump."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, env=tool_environment()
        )
        content = compress_stream(process.stdout, output)
        if process.wait() != 0:
            errors.seek(0)
            raise ToolFailed(tool_complaint(command[0], errors.read()))
    return content


def _feed(command, chunks):
    """Run the client with ``chunks`` as its input; raise BackupError when it fails, or
    when the input does (the client is stopped before it reads a cut-short end)."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=tool_environment(),
        )
        try:
            for chunk in chunks:
                process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the client stopped early: its exit status and stderr say why
        except BackupError:
            process.kill()
            raise
        finally:
            with suppress(BrokenPipeError):
                process.stdin.close()
            process.wait()
        if process.returncode != 0:
            errors.seek(0)
            raise ToolFailed(tool_complaint(command[0], errors.read()))
