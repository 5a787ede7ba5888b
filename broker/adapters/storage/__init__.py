"""Store adapters: SQLite (embedded default) and Cassandra, sharing :mod:`.common`."""
