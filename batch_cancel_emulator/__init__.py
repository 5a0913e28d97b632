"""A multi-dialect provider emulator over real HTTP, for end-to-end tests and benchmarks.

``python -m batch_cancel_emulator --host 127.0.0.1 --port N`` serves the batch endpoints of every dialect
(OpenAI, SiliconFlow, DashScope, DeepInfra, Anthropic, Mistral, Azure v1 and classic, Together, xAI, Gemini,
Vertex AI and Bedrock) under path prefixes (see ``shapes.PREFIXES``) with the body shapes of the providers' own
documentation — held to what each provider's official SDK accepts by ``tests/e2e/test_sdk_fidelity.py`` —
plus an admin API under ``/_admin`` to create batches with fault scenarios and to read back every request it
received. It also pushes like the providers that can (``push.py``): registered with ``POST /_admin/push``
(``Emulator.push_to``), OpenAI and Gemini batches deliver Standard Webhooks-signed events and Bedrock jobs
EventBridge events to a URL when they change state — a timed cancel (``cancelling_s``) ends and is delivered
on time even if nobody polls — retried with backoff and recorded (``Emulator.deliveries``); OpenAI's SDK and
the ``standardwebhooks`` library verify them in ``tests/e2e/test_push_fidelity.py``. The worker never imports
this package; tests start it as a subprocess (``batch_cancel_emulator.testing.Emulator``) so the client under
test crosses a real socket.
"""
