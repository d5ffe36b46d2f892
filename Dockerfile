# The CloneGallery DB toolkit: its Invoke tasks, migrations and seeders, run by a non-root user.
#
#   docker build -t clonegallery-db .
#   docker run --rm -v clonegallery-data:/app/data clonegallery-db                  # invoke db.setup
#   docker run --rm -v clonegallery-data:/app/data clonegallery-db invoke db.status
#
# docker-compose.yml builds and runs this image (docker compose up -d, run --rm db-migrate, ...).
# The database is SQLite in /app/data unless DATABASE_URL names another (PostgreSQL, MySQL).

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The sqlite3 shell, for `docker compose exec db sqlite3 /app/data/clonegallery.db`.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends sqlite3 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --user-group clonegallery

WORKDIR /app

# The package and its drivers first, so that editing a migration or a seeder rebuilds
# only the layers below. Once installed, the package's source goes: one copy of the code.
COPY pyproject.toml README.md ./
COPY db/ db/
RUN pip install ".[postgres,mysql]" && rm -rf build ./*.egg-info db

COPY tasks.py ./
COPY migrations/ migrations/
COPY seeders/ seeders/

# The code stays root-owned (read-only to the user); only the data folder is the user's. A new
# named volume mounted on /app/data copies this ownership, so the user can write to it.
RUN mkdir /app/data && chown clonegallery:clonegallery /app/data
ENV DATABASE_URL=sqlite:////app/data/clonegallery.db

USER clonegallery

CMD ["invoke", "db.setup"]
