"""The database the models are bound to: one peewee DatabaseProxy.

``db.models`` binds its models to it (``bind_models``); ``db.access`` reads it to claim
the acting user on the connection. Both import it from here, so neither imports the
other's module to find it.

Inside ``reading(database)`` (``db.models.reading_from``) the proxy answers with that
database instead, for this thread or task only (a context variable): the app sends its
reads to a standby while every other request keeps the primary.
"""

from contextlib import contextmanager
from contextvars import ContextVar

import peewee

_reading = ContextVar("clonegallery_reading_from", default=None)


class RoutingProxy(peewee.DatabaseProxy):
    """A DatabaseProxy whose database is the one of an enclosing ``reading`` block, if any,
    else the one ``initialize`` gave."""

    __slots__ = ()
    _bound = peewee.DatabaseProxy.obj  # the slot that holds what initialize gave

    @property
    def obj(self):
        reading = _reading.get()
        return reading if reading is not None else RoutingProxy._bound.__get__(self)

    @obj.setter
    def obj(self, database):
        RoutingProxy._bound.__set__(self, database)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)  # Proxy's own refuses the property


@contextmanager
def reading(database):
    """Make the models use ``database`` inside the block (this thread or task only)."""
    token = _reading.set(database)
    try:
        yield database
    finally:
        _reading.reset(token)


database_proxy = RoutingProxy()
