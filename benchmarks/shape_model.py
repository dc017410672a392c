"""A randomly initialised checkpoint with a compressed model's shapes, for timing only.

Latency does not depend on the weights' values, so a model with the shapes of a
compressed student (layers, attention heads kept, FFN width, int8 storage) times like it
without training it first. Scores of such a model mean nothing.

  python benchmarks/shape_model.py /tmp/stack_int8 --layers 3 --heads 6 --ffn 768 --int8
  python benchmarks/latency.py $BERTJAX_MODELS/minilm-l6-h384 /tmp/stack_int8 \
      --torch $BERTJAX_MODELS/minilm-l6-h384 --batch 1 32

Defaults are the teacher's (MiniLM-L6-H384: 6 layers, 12 heads, FFN 1536).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12, help="heads kept per layer (of 12)")
    parser.add_argument("--ffn", type=int, default=1536, help="FFN width per layer")
    parser.add_argument("--int8", action="store_true", help="stored int8 (W8A8 at inference)")
    parser.add_argument("--tokenizer", default="minilm-l6-h384")
    args = parser.parse_args(argv)
    if not 1 <= args.heads <= 12:
        parser.error("--heads must be in 1..12")

    from bertjax import models
    from methods.quant import storage

    config = models.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=args.layers,
        num_attention_heads=12, intermediate_size=1536,
        pruned_heads=(tuple(range(12 - args.heads)),) * args.layers,
        intermediate_sizes=(args.ffn,) * args.layers,
    )  # fmt: skip
    model, params = models.build(config, head="classification", num_labels=2)
    if args.int8:
        params = storage.quantize_params(params)
    path = models.save_pretrained(model, params, args.out, tokenizer=args.tokenizer)
    print(f"wrote {path}: {args.layers} layers, {args.heads} heads, FFN {args.ffn}"
          + (", int8" if args.int8 else ""))  # fmt: skip


if __name__ == "__main__":
    main()
