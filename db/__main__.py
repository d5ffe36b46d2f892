"""``python -m db``: the same as the ``clonegallery-db`` console script."""

from db.cli import main

main()
