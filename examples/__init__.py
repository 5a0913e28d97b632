"""Runnable examples of publishing cancel commands (``python -m examples.budget_guard``); not shipped in the wheel."""
