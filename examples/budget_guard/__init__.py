"""A budget guard: sums per-team LLM batch spend from a Kafka topic and stops a team's batches over budget.

The smallest realistic publisher of cancel commands, and the end-to-end demonstration that one is enough:
it never talks to a provider, it only publishes commands (``worker.publisher``) and lets the worker do the
cancelling, retrying and following. Input, one JSON object per record on the ``spend`` topic::

    {"team": "research", "provider": "openai", "account": "default", "batch_id": "batch_abc", "cost_usd": 1.25}

Crossing a team's budget publishes one standing kill per account the team spends on (cancel by selector on
the team's metadata, until the budget period ends), so the guard needs no batch ids: a batch it never saw, or
one started after the crossing, is stopped too. State is in memory and rebuilt on start by re-reading the spend
topic from the beginning; kills are re-published then with the same deterministic ``command_id``.
"""
