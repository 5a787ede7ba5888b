"""Index adapters: SQLite (embedded default) and Elasticsearch, sharing the document shape and query checks."""
