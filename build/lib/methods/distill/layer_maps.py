"""Which teacher layer each student layer learns from (TinyBERT's mapping function g).

Layers are 1-based as in the paper (0 is the embedding layer); the result is a
tuple of `(student_layer, teacher_layer)` pairs over 0-based transformer layers,
the indices of the `hidden/{i}` and `attn_scores/{i}` intermediates.
  uniform   student j <- teacher j * M // N   (TinyBERT's default)
  top       student j <- teacher M - N + j
  bottom    student j <- teacher j
  last      only the last student layer <- the last teacher layer
  explicit  student j <- `teacher_layers[j - 1]` (1-based; 0 skips layer j)
"""

MAPS = ("uniform", "top", "bottom", "last", "explicit")


def layer_map(
    kind: str, student_layers: int, teacher_layers: int, explicit: tuple[int, ...] = ()
) -> tuple[tuple[int, int], ...]:
    """0-based `(student, teacher)` layer pairs for `kind` (see the module docstring)."""
    n, m = student_layers, teacher_layers
    if kind == "explicit":
        if len(explicit) != n:
            raise ValueError(f"explicit layer map needs {n} entries, got {explicit}")
        pairs = tuple((j, t) for j, t in zip(range(1, n + 1), explicit, strict=True) if t)
    elif n > m:
        raise ValueError(f"a {n}-layer student cannot map onto a {m}-layer teacher")
    elif kind == "uniform":
        pairs = tuple((j, j * m // n) for j in range(1, n + 1))
    elif kind == "top":
        pairs = tuple((j, m - n + j) for j in range(1, n + 1))
    elif kind == "bottom":
        pairs = tuple((j, j) for j in range(1, n + 1))
    elif kind == "last":
        pairs = ((n, m),)
    else:
        raise ValueError(f"unknown layer map {kind!r}; known: {MAPS}")
    if any(not 1 <= t <= m for _, t in pairs):
        raise ValueError(f"layer map {kind} {pairs} outside the teacher's {m} layers")
    return tuple((j - 1, t - 1) for j, t in pairs)
