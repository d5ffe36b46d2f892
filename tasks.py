"""CloneGallery database tasks: ``invoke --list`` shows them, ``invoke --help db.X`` explains one.

Configuration (first found wins): ``DATABASE_URL``; ``db.url`` in ``invoke.yaml`` or
``INVOKE_DB_URL``; the SQLite file ``clonegallery.db`` beside this file. ``db.migrations``
and ``db.seeders`` (``INVOKE_DB_MIGRATIONS``, ``INVOKE_DB_SEEDERS``) name the folders.
``--debug`` (or ``INVOKE_DB_DEBUG=1``) shows the traceback behind an error. The tasks
themselves live in ``db/cli.py``; ``clonegallery-db`` runs the same ones from anywhere.
"""

from pathlib import Path

from db.cli import namespace

ns = namespace(project=Path(__file__).resolve().parent)
