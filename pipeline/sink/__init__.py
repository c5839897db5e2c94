"""The DuckDB sink: ``jobs.*`` topics -> one analytics DuckDB file, exactly once.

``records`` decodes contract-v1 records into rows (pure), ``schema`` owns the tables, views
and migrations, ``writer`` writes a batch and its offsets in one transaction, ``quack``
serves the file for live SQL, ``consumer`` is the Kafka loop that ties them together,
``sql`` is what ``pipeline sql`` runs, ``describe`` holds what every table, view and column
is (the file's comments, ``pipeline sql --describe``) and ``check`` the data tests
``pipeline check`` runs.
"""
