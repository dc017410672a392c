"""Peers timed beside bertjax: transformers' PyTorch model of a checkpoint.

PyTorch is imported only when a peer is built (it is a test and benchmark
dependency, not a runtime one).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertjax.bench import latency as bench
from bertjax.models.checkpoints import read_state_dict


def torch_forward(
    directory: Path, batch_size: int, seq_len: int, seed: int = 0
) -> tuple[Callable[[], Any], dict[str, int]]:
    """`(run, size)`: one fp32 PyTorch inference call on `bench.random_batch`, and its size.

    Raises RuntimeError when any encoder weight did not load from `directory`.
    """
    import torch
    import transformers

    head = bench.checkpoint_head(directory)
    has_pooler = any(".pooler." in f".{key}" for key in read_state_dict(directory))
    if head:
        cls, kwargs = transformers.BertForSequenceClassification, {}
    else:  # as bertjax does, run the pooler only when the checkpoint has one
        cls, kwargs = transformers.BertModel, {"add_pooling_layer": has_pooler}
    model, info = cls.from_pretrained(
        str(directory), dtype=torch.float32, output_loading_info=True, **kwargs
    )
    missing = [k for k in info["missing_keys"] if has_pooler or "pooler." not in k]
    if missing or info.get("mismatched_keys"):
        raise RuntimeError(
            f"{directory}: weights did not load into {cls.__name__}: missing={missing[:5]}, "
            f"mismatched={info.get('mismatched_keys')}"
        )
    model.eval()
    batch = {
        name: torch.from_numpy(value).long()
        for name, value in bench.random_batch(
            model.config.vocab_size, batch_size, seq_len, seed
        ).items()
    }
    output = "logits" if head else "last_hidden_state"

    @torch.inference_mode()
    def run():
        return model(**batch)[output]

    size = bench.model_size({n: p.detach().numpy() for n, p in model.named_parameters()})
    return run, size
