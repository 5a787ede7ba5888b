"""Stream adapters: files (length-prefixed ``.avro-stream`` files and packet folders) and Kafka."""
