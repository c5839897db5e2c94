"""The DuckDB sink: ``jobs.*`` topics -> one analytics DuckDB file, exactly once.

``records`` decodes contract-v1 records into rows (pure), ``schema`` owns the tables, views
and migrations, ``writer`` writes a batch and its offsets in one transaction, ``quack``
serves the file for live SQL, ``consumer`` is the Kafka loop that ties them together, and
``sql`` is what ``pipeline sql`` runs.
"""
