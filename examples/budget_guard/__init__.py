"""A budget guard: sums per-team LLM batch spend from a Kafka topic and cancels a team's batches over budget.

The smallest realistic publisher of cancel commands, and the end-to-end demonstration that one is enough:
it never talks to a provider, it only publishes commands (``worker.publisher``) and lets the worker do the
cancelling, retrying and following. Input, one JSON object per record on the ``spend`` topic::

    {"team": "research", "provider": "openai", "account": "default", "batch_id": "batch_abc", "cost_usd": 1.25}

State is in memory and rebuilt on start by re-reading the spend topic from the beginning; cancels are
re-published then with the same deterministic ``command_id``, which the worker answers again harmlessly.
"""
