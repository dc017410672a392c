"""GLUE data: task table, file readers, tokenization cache and batching.

Submodules: `tasks` (what differs between tasks), `sources` (TSV/TFDS to
`Example`s), `tokenizer` (`Example`s to cached token ids), `pipeline`
(token ids to fixed-shape numpy batches).
"""

from bertjax.data.sources import DataError, Example, read_split
from bertjax.data.tasks import Task, eval_split, get_task, num_labels

__all__ = ["DataError", "Example", "Task", "eval_split", "get_task", "num_labels", "read_split"]
