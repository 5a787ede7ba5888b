"""Adapters: the implementations of :mod:`broker.ports`, each embedded and production pair held to one contract.

* ``streams/``  :class:`~broker.ports.Source` / :class:`~broker.ports.Sink`: files (embedded) and Kafka;
* ``storage/``  :class:`~broker.ports.Store`: SQLite (embedded) and Cassandra;
* ``search/``   :class:`~broker.ports.Index`: SQLite (embedded) and Elasticsearch;
* ``outbox``    :class:`~broker.ports.IndexWriter`: a durable queue between the store and the index.

Client libraries (confluent-kafka, cassandra-driver, elasticsearch) are imported only here, and
only when the adapter is opened; :mod:`broker.assemble` picks them from the configuration.
"""
