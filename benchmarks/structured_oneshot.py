"""A structurally pruned copy of a checkpoint, one shot, for timing (no retraining).

Heads and FFN neurons are ranked by weight norm (`StructuredPruning(importance=
"weight_norm", prune_step=0)`, per layer) and sliced away (`finalize`), and the smaller
model is written in HF layout, so that every runtime (`peer_runtime.py`, `latency.py`)
times the physically smaller model. Its accuracy is that of pruning without
retraining (poor); use `configs/prune_structured.py` for a model to ship.

  python benchmarks/structured_oneshot.py minilm-l6-h384 runs/structured50 --heads 0.5 --ffn 0.5
"""

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertjax import bench, models  # noqa: E402
from methods.pruning.structured import StructuredPruning  # noqa: E402


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint directory or $BERTJAX_MODELS name")
    parser.add_argument("out", type=Path, help="where the pruned checkpoint is written")
    parser.add_argument("--heads", type=float, default=0.5, help="share of heads removed")
    parser.add_argument("--ffn", type=float, default=0.5, help="share of FFN neurons removed")
    args = parser.parse_args(argv)
    directory = bench.checkpoint_dir(args.model)
    model, params = bench.load_model(directory)
    method = StructuredPruning(
        num_heads=model.config.num_attention_heads,
        head_sparsity=args.heads,
        ffn_sparsity=args.ffn,
        importance="weight_norm",
        prune_step=0,
    )
    params, state = method.init(params, None)
    params, config = method.finalize(jax.device_get(params), state, model.config)
    small = model.clone(config=config)
    out = models.save_pretrained(small, params, args.out, tokenizer=directory)
    layers = range(config.num_hidden_layers)
    heads, widths = [config.heads_in_layer(i) for i in layers], [config.ffn_size(i) for i in layers]
    print(f"wrote {out}: heads per layer {heads}, FFN widths {widths}")
    return out


if __name__ == "__main__":
    main()
