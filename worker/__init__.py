"""batch-cancel-worker: cancel LLM batch jobs on command from Kafka, follow them, publish every state change."""

__all__: list[str] = []
