"""One line that says what is wrong with validated input: for settings, the providers file and commands alike.

Input values are always left out: a setting may be a secret and a command may be hostile or huge, so a
problem is named by where it is (a dotted key, or the environment variable) and pydantic's message alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

__all__ = ["explain"]

#: A key part longer than this is cut (a hostile command can make a dict key as long as it likes).
_PART_CHARS = 64


def explain(exc: ValidationError, *, env_prefix: str | None = None, most: int | None = None) -> str:
    """``key: message`` per problem, joined by ``; ``; the first ``most`` problems when there are more.

    With ``env_prefix`` (``"BCW_"``) a key is written as the environment variable that sets it.
    """
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False)[:most]:
        parts.append(f"{_where(err['loc'], env_prefix)}: {err['msg']}")
    return "; ".join(parts)


def _where(loc: Sequence[int | str], env_prefix: str | None) -> str:
    if env_prefix is not None:
        return env_prefix + "_".join(str(p) for p in loc).upper() if loc else "settings"
    return ".".join(str(p)[:_PART_CHARS] for p in loc) or "(top level)"
