"""The engines' own command-line clients: finding them, running them, and handing them
credentials without putting a password on a command line.

    pg_dump = find_tool("pg_dump", package=POSTGRES_CLIENT_PACKAGE)
    with libpq_environment(url) as env:            # PGHOST..., and a private PGPASSFILE
        run_tool([pg_dump, "--schema-only"], env, stdout=output)
    with mysql_options_file(url) as options:       # a private --defaults-extra-file
        run_tool([dump, f"--defaults-extra-file={options}", name], env=None)

A missing tool is named with the package that provides it; a failing one is reported by
its last words on stderr, reduced to one printable line (``ToolFailed``). libpq's
``PGPASSWORD`` is visible to ``ps`` on some systems: a temporary 0600 password file is
used instead, deleted afterwards.

The tools get a scrubbed environment (``tool_environment``), not ours: the locale,
``PATH`` and the settings written for them, never ``DATABASE_URL``, ``INVOKE_*`` or
anything that looks like a password. The libpq tools keep the ``PG*`` settings that
psycopg reads as well (``PGSSLMODE``...), so both reach the same server the same way;
the MariaDB tools get no ``HOME``, since a ``~/.my.cnf`` would override the credentials
of our option file (PyMySQL does not read it either).
"""

import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from db.engines.base import database_name_of
from db.errors import ConfigError, ToolFailed, printable

POSTGRES_CLIENT_PACKAGE = (
    "the PostgreSQL client tools (Debian/Ubuntu: apt install postgresql-client)"
)
MYSQL_CLIENT_PACKAGE = "the MariaDB client (Debian/Ubuntu: apt install mariadb-client)"
MYSQL_DUMP_TOOLS = ("mariadb-dump", "mysqldump")
MYSQL_CLIENT_TOOLS = ("mariadb", "mysql")
TOOL_ERROR_LINES = 3
TOOL_LINE_CHARS = 200
# A line that reports an error: "pg_restore: error: ...", "ERROR 1044 (42000) at line 3: ..."
ERROR_LINE = re.compile(r"^(\S+: )?error\b", re.IGNORECASE)
# What every tool may see of our environment: where programs are, language and time zone.
TOOL_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR")
TOOL_VARIABLE_PREFIXES = ("LC_",)
# What looks like a secret, whatever the prefix (PGPASSWORD, MYSQL_PWD, AWS_SECRET_...).
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|PWD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


def url_parts(url):
    """Return (host, port, user, password, database) of a server URL."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password is not None else None
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, parts.port, user, password, database_name_of(url)


def with_credentials(url, user, password):
    """Return the URL with another user and password (percent-encoded)."""
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{where}"
    return urlunsplit(parts._replace(netloc=netloc))


def find_tool(*names, package):
    """Return the path of the first client tool found on PATH, or raise naming the
    package that provides it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(f"{names[0]} was not found on PATH: install {package}")


def tool_environment(home=False, prefixes=()):
    """Return the environment a client tool gets: PATH, locale, time zone (and HOME, and
    the variables that start with ``prefixes``, when asked), never a secret-looking one."""
    wanted = TOOL_VARIABLE_PREFIXES + tuple(prefixes)
    return {
        name: value
        for name, value in os.environ.items()
        if (name in TOOL_VARIABLES or name.startswith(wanted) or (home and name == "HOME"))
        and not SECRET_NAME.search(name)
    }


def run_tool(command, env=None, stdin=None, stdout=None):
    """Run a client tool (``env``: tool_environment() when None); raise ToolFailed with
    its last words when it fails."""
    if env is None:
        env = tool_environment()
    try:
        result = subprocess.run(
            command, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, check=False
        )
    except OSError as exc:
        raise ToolFailed(f"cannot run {Path(command[0]).name}: {exc}") from exc
    if result.returncode != 0:
        raise ToolFailed(tool_complaint(command[0], result.stderr))


@contextmanager
def running_tool(command, env=None, stdout=subprocess.DEVNULL):
    """Start a client tool (its output into ``stdout``, an open file) and yield while it
    runs (the block does other work meanwhile); then wait for it, and raise ToolFailed
    with its last words when it failed. A block that raises stops the tool."""
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(
                command,
                env=tool_environment() if env is None else env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=errors,
            )
        except OSError as exc:
            raise ToolFailed(f"cannot run {Path(command[0]).name}: {exc}") from exc
        try:
            yield process
            failed = process.wait() != 0
        except BaseException:  # the block failed, or a stop signal came while waiting
            process.kill()
            process.wait()
            raise
        if failed:
            errors.seek(0)
            raise ToolFailed(tool_complaint(command[0], errors.read()))


def tool_complaint(tool, stderr):
    """Return the gist of a tool's error output, on one printable line (a tool may echo
    bytes of a damaged file: they must not reach the terminal as control codes)."""
    lines = [
        printable(line)[:TOOL_LINE_CHARS] for line in stderr.decode(errors="replace").splitlines()
    ]
    lines = [line for line in lines if line]
    # The first error and what follows it (pg_restore adds the context and the
    # command), else the last lines (warnings come first, the failure last).
    first = next((n for n, line in enumerate(lines) if ERROR_LINE.match(line)), None)
    if first is None:
        first = max(len(lines) - TOOL_ERROR_LINES, 0)
    gist = "; ".join(lines[first : first + TOOL_ERROR_LINES]) or "no error message"
    return f"{Path(tool).name} failed: {gist}"


@contextmanager
def private_file(text):
    """Yield the path of a temporary file holding ``text`` (a password file), created
    0600 by mkstemp before anything is written into it; it is deleted afterwards."""
    descriptor, name = tempfile.mkstemp(prefix="clonegallery-", suffix=".cnf")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        yield Path(name)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(name)


@contextmanager
def libpq_environment(url):
    """Yield the environment for libpq tools: where to connect, and a private password
    file when the URL carries a password (or, failing that, ``PGPASSWORD`` is set: the
    driver uses it, so the tools must, but not in their environment)."""
    host, port, user, password, name = url_parts(url)
    env = {**tool_environment(home=True, prefixes=("PG",)), "PGDATABASE": name}
    env.update({k: str(v) for k, v in (("PGHOST", host), ("PGPORT", port), ("PGUSER", user)) if v})
    if password is None:
        password = os.environ.get("PGPASSWORD")
    if password is None:
        yield env
        return
    line = ":".join(_escaped(part) for part in ("*", "*", "*", user or "*", password))
    with private_file(line + "\n") as passfile:
        yield {**env, "PGPASSFILE": str(passfile)}


def _escaped(text):
    return text.replace("\\", "\\\\").replace(":", "\\:")


def mysql_options_file(url):
    """Return a context manager yielding a private MySQL option file with the URL's
    connection and password (for --defaults-extra-file, which must come first)."""
    host, port, user, password, _ = url_parts(url)
    lines = ["[client]"]
    for key, value in (("host", host), ("port", port), ("user", user), ("password", password)):
        if value is not None:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key}="{escaped}"')
    return private_file("\n".join(lines) + "\n")


def mysql_dump_command(options, url, *flags):
    """Return the command line of mariadb-dump (or mysqldump) for the URL's database: the
    option file first (the tools insist on it), then ``flags``."""
    tool = find_tool(*MYSQL_DUMP_TOOLS, package=MYSQL_CLIENT_PACKAGE)
    return [
        tool,
        f"--defaults-extra-file={options}",
        *flags,
        "--default-character-set=utf8mb4",
        "--no-tablespaces",
        database_name_of(url),
    ]
