# The PostgreSQL server of docker-compose.yml (services postgres and postgres-replica): the
# official image, with pgBackRest for its archive_command and the toolkit's uid.
#
#   docker compose --profile postgres build postgres
#
# The build context is this folder (docker/): it holds this file and pg_hba.conf, nothing else.

# The major of the toolkit's client tools (see ../Dockerfile: bookworm's postgresql-client-15),
# on the toolkit's Debian, whose pgBackRest both images install.
FROM postgres:15-bookworm

# archive_command runs `pgbackrest archive-push` in this container. From bookworm itself
# (-t bookworm), not from the PostgreSQL apt repository the image also lists: one pgBackRest
# version writes and reads the repository, the one the toolkit image installs (2.45).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends -t bookworm pgbackrest \
    && rm -rf /var/lib/apt/lists/*

# The server runs as uid 10001, the toolkit's user (clonegallery in ../Dockerfile), so that
# db-replicate can read the data directory (0700) and share the pgBackRest repository with the
# server: pgBackRest writes its files for their owner alone (0640, folders 0750). As root, the
# image's entrypoint gives a volume's files to postgres on every start, so a volume made by
# the former uid (999 here, 70 in postgres:15-alpine) is taken over. /app/replica: the mount
# point of the volume db-replica, the repository (INVOKE_DB_REPLICA of db-replicate).
RUN groupmod --gid 10001 postgres \
    && usermod --uid 10001 --gid 10001 postgres \
    && mkdir -p /app/replica \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql /app/replica \
        /var/lib/pgbackrest /var/log/pgbackrest /var/spool/pgbackrest

# Who may connect: the image's own rules, plus replication connections (postgres-replica's
# pg_basebackup and streaming) from other containers, with the password. docker-compose.yml
# names it (-c hba_file=...), so it holds for a data directory made before it, too.
COPY pg_hba.conf /etc/postgresql/pg_hba.conf
