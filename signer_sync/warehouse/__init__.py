"""The warehouse: schema, connection, write path and sync state."""
