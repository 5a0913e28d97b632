"""Sweeps: list an account's batches, match them against a selector, and expand the matches into cancels.

``criteria`` turns a selector's criteria into the provider's ``ListFilter`` (pure); ``listing`` walks every page
within the account's request budget; ``expand`` builds one child cancel command per match and publishes them;
``runner`` drives one selector command from intake to its final event; ``kills`` keeps standing kills swept on
schedule. Nothing here imports aiokafka: records leave through the small ``CommandSink`` / ``SelectorSink``
protocols, which ``worker.kafka.producer`` implements.
"""
