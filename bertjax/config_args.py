"""Parsing the `:arg` string of a config file (`model=mini,task=rte,smoke=True`)."""

import ast
from typing import Any


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
    """`defaults` updated from a comma-separated `key=value` string.

    Values are Python literals where they parse as one (`True`, `3`, `0.1`),
    else strings. Unknown keys are an error naming the key and the known ones.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"config argument {item!r} is not key=value")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        try:
            values[key] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            values[key] = raw.strip()
    return values
