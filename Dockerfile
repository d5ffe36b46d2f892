# The CloneGallery DB toolkit: its Invoke tasks, migrations and seeders, run by a non-root user.
#
#   docker build -t clonegallery-db .
#   docker run --rm -v clonegallery-data:/app/data clonegallery-db                  # invoke db.setup
#   docker run --rm -v clonegallery-data:/app/data clonegallery-db invoke db.status
#   docker run --rm -v clonegallery-data:/app/data -v clonegallery-backups:/app/backups \
#       clonegallery-db invoke db.backup
#
# docker-compose.yml builds and runs this image (docker compose up -d, run --rm db-migrate, ...).
# The database is SQLite in /app/data unless DATABASE_URL names another (PostgreSQL, MySQL);
# backups go to /app/backups (INVOKE_DB_BACKUPS), a volume of their own.

# Debian pinned by name (bookworm), not left to the tag: the PostgreSQL client major comes with
# the Debian release, and it must be the major of the server in docker-compose.yml. pg_dump
# refuses a server newer than itself, and a newer pg_restore writes settings an older server
# rejects (pg_restore 17 into PostgreSQL 16: unrecognized configuration parameter
# "transaction_timeout"), so client and server are one major: bookworm's 15, postgres:15 in
# docker-compose.yml. These are also the clients the test suite runs against (PostgreSQL 15,
# MariaDB 10.11). A bare python:3.12-slim moves to the next Debian, and to other clients, alone.
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The engines' own clients, which db.backup, db.verify and db.restore run: pg_dump/pg_restore
# (postgresql-client-15) and mariadb-dump/mariadb (mariadb-client). The sqlite3 shell, for
# `docker compose exec db sqlite3 /app/data/clonegallery.db`. pgBackRest, which db.replicate
# and db.restore --to-time run on PostgreSQL: bookworm's 2.45, the version the compose server
# archives its WAL with (docker/postgres.Dockerfile).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends \
        sqlite3 postgresql-client-15 mariadb-client pgbackrest \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --user-group clonegallery

WORKDIR /app

# The package and its drivers first, so that editing a migration or a seeder rebuilds
# only the layers below. Once installed, the package's source goes: one copy of the code.
# squawk: db.lint and db.migrate --strict on PostgreSQL, in a deploy that runs the image;
# litestream: db.replicate and db.restore --to-time on SQLite.
COPY pyproject.toml README.md ./
COPY db/ db/
RUN pip install ".[postgres,mysql,squawk,litestream]" && rm -rf build ./*.egg-info db

COPY tasks.py ./
COPY migrations/ migrations/
COPY seeders/ seeders/

# The code stays root-owned (read-only to the user); only the data and backups folders are the
# user's. A new named volume mounted on either copies this ownership, so the user can write to
# it. Backups have a folder (a volume) of their own: losing the data volume must not lose them.
# So has the continuous protection, /app/replica (the volume db-replica: Litestream's replica,
# or the pgBackRest repository), and db.health's metrics, /app/metrics (the volume db-metrics,
# which node-exporter reads). /var/lib/postgresql/data: where compose mounts the server's
# data (read-only, for pgBackRest) or the empty volume a point-in-time recovery fills; the
# user is the compose server's (uid 10001, docker/postgres.Dockerfile). pgBackRest's log and
# spool folders are the user's too.
RUN mkdir -p /app/data /app/backups /app/replica /app/metrics /var/lib/postgresql/data \
    && chown clonegallery:clonegallery /app/data /app/backups /app/replica /app/metrics \
        /var/lib/postgresql/data /var/log/pgbackrest /var/spool/pgbackrest \
    && chmod 0700 /var/lib/postgresql/data
ENV DATABASE_URL=sqlite:////app/data/clonegallery.db \
    INVOKE_DB_BACKUPS=/app/backups \
    INVOKE_DB_ENVIRONMENT=production

USER clonegallery

CMD ["invoke", "db.setup", "--no-sample"]
