"""Alembic's entry point for tether's run store.

tether runs migrations itself (`tether.store._migrate`), handing over an open
connection inside a transaction that already holds the store's write lock; this
file only runs the migrations on that connection.
"""

from alembic import context

from tether.store._schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
