"""The database the models are bound to: one peewee DatabaseProxy.

``db.models`` binds its models to it (``bind_models``); ``db.access`` reads it to claim
the acting user on the connection. Both import it from here, so neither imports the
other's module to find it.
"""

import peewee

database_proxy = peewee.DatabaseProxy()
