"""General (task-agnostic) distillation: teacher attention and hidden states on unlabeled text.

  python -m bertjax.main --config=configs/general_distill.py:student=mini,steps=2000 \
      --workdir=runs/general/mini

TinyBERT's first stage (Jiao et al. 2020): no labels, no MLM head. The corpus
(WikiText-2 raw under $BERTJAX_DATA, or a text file) is cut into chunks of `seq`
tokens; for each `(student, teacher)` pair of the layer map (`map`, default uniform)
the student matches the teacher's attention scores and, through a learned projection
when the widths differ, its hidden states (and the embeddings). The student in HF
layout lands in WORKDIR/export; fine-tune it with `configs/finetune.py:model=WORKDIR/export`.

Arguments: `student` (a random size such as `mini`, or a checkpoint), `teacher`
(pretrained, not fine-tuned), `corpus`, `seq`, `steps`, `batch`, `map`, `smoke`.
"""

import ml_collections

from bertjax.config_args import parse_arg

ARGS = dict(
    student="mini",
    teacher="minilm-l6-h384",
    corpus="wikitext-2",
    seq=128,
    steps=2000,
    batch=32,
    map="uniform",
    smoke=False,
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(parse_arg(arg, **ARGS))


def build(args: dict) -> ml_collections.ConfigDict:
    """The general-distillation config for parsed `args` (keys of ARGS)."""
    config = ml_collections.ConfigDict()
    config.teacher = args["teacher"]

    config.model = ml_collections.ConfigDict()
    config.model.name = args["student"]
    config.model.tokenizer = ""  # empty means the teacher's
    config.model.hidden_dropout_prob = 0.1
    config.model.attention_probs_dropout_prob = 0.1

    config.corpus = ml_collections.ConfigDict()
    config.corpus.name = args["corpus"]  # a name of data/corpus.py's CORPORA, or a text file
    config.corpus.root = ""  # empty means $BERTJAX_DATA
    config.corpus.seq_len = args["seq"]
    config.corpus.train_limit = 0  # chunks; 0 means all
    config.corpus.eval_split = "valid"
    config.corpus.eval_limit = 256

    config.distill = ml_collections.ConfigDict()
    config.distill.layer_map = args["map"]
    config.distill.embedding = True  # also match the embedding layer (TinyBERT)

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = args["steps"]
    # Stop (checkpoint, evaluate, export) after this many steps, on the schedule of
    # num_steps: a run cut to a time budget. 0 means num_steps.
    config.train.stop_after_steps = 0
    config.train.batch_size = args["batch"]
    config.train.eval_batch_size = 32
    config.train.learning_rate = 5e-4
    config.train.warmup_ratio = 0.05
    config.train.weight_decay = 0.01
    config.train.max_grad_norm = 1.0
    config.train.seed = 0
    config.train.log_every_steps = 10
    config.train.eval_every_steps = 500

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 100
    config.checkpoint.keep = 2

    config.export = True
    config.smoke = bool(args["smoke"])
    if args["smoke"]:
        config.corpus.seq_len = 32
        config.corpus.train_limit = 64
        config.corpus.eval_limit = 16
        config.train.num_steps = 4
        config.train.batch_size = 8
        config.train.eval_batch_size = 8
        config.train.log_every_steps = 1
        config.train.eval_every_steps = 4
        config.checkpoint.every_steps = 2
        config.checkpoint.keep = 1
    return config
