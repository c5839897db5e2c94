"""The alerter: rules over job transitions, rate limits and digests, delivery through
Apprise, and a record of every alert on ``jobs.alerts``.

``rules`` (the TOML rules file) -> ``logic`` (pure rules and per-job memory) ->
``limits`` (rate limits, digests) -> ``message`` (the text) -> ``delivery`` (Apprise);
``service`` is the Kafka shell and its commit protocol.
"""
