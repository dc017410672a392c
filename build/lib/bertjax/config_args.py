"""Parsing the `:arg` string of a config file (`model=mini,task=rte,smoke=True`)."""

import ast
from typing import Any


def parse_bool(key: str, raw: str) -> bool:
    """`true` / `false` in any case; anything else (`Ture`, `no`, `1`) is an error naming `key`.

    Strict on purpose: `smoke=false` read as a non-empty string would turn smoke mode on."""
    word = raw.strip().lower()
    if word not in ("true", "false"):
        raise ValueError(f"config argument {key}={raw}: must be true or false")
    return word == "true"


def parse_value(key: str, raw: str, default: Any) -> Any:
    """`raw` parsed as the type of `default`: a bool strictly, an int, a float (an int is
    accepted), anything else as the string given. Errors name `key` and the type."""
    raw = raw.strip()
    if isinstance(default, bool):
        return parse_bool(key, raw)
    if not isinstance(default, int | float):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = None
    integer = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"config argument {key}={raw}: must be {kind}")
    return value if integer else float(value)


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
    """`defaults` updated from a comma-separated `key=value` string.

    Each value is parsed as its default's type (`parse_value`): booleans are
    `true`/`false` only, numbers must be numbers. Unknown keys are an error
    naming the key and the known ones.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"config argument {item!r} is not key=value")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        values[key] = parse_value(key, raw, defaults[key])
    return values
