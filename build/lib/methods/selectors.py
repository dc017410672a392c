"""Selecting parameters by regular expressions over '/'-joined paths.

The one way parameters are chosen in bertjax: weight decay, pruning,
quantization and BitFit all say which leaves they act on with rules such as
`[(r".*/bias$", "train"), (r".*", "freeze")]`; the first rule whose pattern
fully matches a leaf's path decides.
"""

import re
from collections.abc import Sequence
from typing import Any

import jax

Rules = Sequence[tuple[str, Any]]


def path_string(path: tuple) -> str:
    """'/'-joined names of a `jax.tree_util` key path ('bert/encoder/layer/0/...')."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def param_paths(tree: Any) -> list[str]:
    """The path string of every leaf, in `tree_leaves` order."""
    return [path_string(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def apply_rules(tree: Any, rules: Rules, default: Any = None, is_leaf=None) -> Any:
    """A tree like `tree` whose leaves are the value of the first matching rule.

    Leaves that no rule matches get `default`; a `None` default makes that an
    error, so that a typo in a pattern cannot silently select nothing. `is_leaf`
    (as in `jax.tree_util`) makes a subtree one leaf, named by its own path.
    """
    compiled = [(re.compile(pattern), value) for pattern, value in rules]

    def pick(path, _):
        name = path_string(path)
        for pattern, value in compiled:
            if pattern.fullmatch(name):
                return value
        if default is None:
            raise ValueError(f"no rule matches parameter {name!r}")
        return default

    return jax.tree_util.tree_map_with_path(pick, tree, is_leaf=is_leaf)


def select(
    tree: Any, include: str | Sequence[str], exclude: str | Sequence[str] = (), is_leaf=None
) -> Any:
    """Boolean tree: True where the path matches any `include` and no `exclude` pattern."""
    include = [include] if isinstance(include, str) else list(include)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    rules = [(p, False) for p in exclude] + [(p, True) for p in include]
    return apply_rules(tree, rules, default=False, is_leaf=is_leaf)
