"""Everything that talks to Kafka through a client goes through this package.

``clients``: the one place producers, consumers and admin clients are built from the
settings (the connection options, and later TLS and SASL, are added there once);
``probes``: is a broker there (a bare ApiVersions request), how many partitions a topic
has; ``reading``: a topic read to its end; ``compat``: the one private aiokafka call.
The topic catalog is ``pipeline/catalog.py``.
"""
