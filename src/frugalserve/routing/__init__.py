"""Routing for ``model: "auto"``: pure decisions over a snapshot of the pools (docs/routing.md).

``features.extract`` (what the request needs) → ``policy.decide`` (which pool, and why) →
``replicas.choose_replica`` (which replica). ``sessions`` keeps a conversation's tier; ``cascade`` tests
an answer for escalation; ``snapshot`` is the state they read; ``config`` is the ``routing:`` section.
Nothing here does I/O, logs or reads the clock: the caller passes the time in.
"""
