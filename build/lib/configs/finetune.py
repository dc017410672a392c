"""Fine-tune a (pretrained) BERT on one GLUE task.

  python -m bertjax.main --config=configs/finetune.py:model=minilm-l6-h384,task=rte \
      --workdir=runs/rte --config.train.learning_rate=5e-5

Arguments: `model` (a name under $BERTJAX_MODELS, a checkpoint directory, a
hub name, or a random size such as `tiny`), `task` (a GLUE task), `smoke`
(tiny data, one short epoch: for tests and first tries).
"""

import ml_collections

from bertjax.config_args import parse_arg

# The `:arg` keys every experiment config accepts.
BASE_ARGS = dict(model="minilm-l6-h384", task="rte", smoke=False)
# Every config module's `ARGS`: its `:arg` keys and their defaults (`--help` lists them).
ARGS = BASE_ARGS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(parse_arg(arg, **ARGS))


def build(args: dict) -> ml_collections.ConfigDict:
    """The fine-tuning config for parsed `args` (keys of BASE_ARGS; others ignored)."""
    config = ml_collections.ConfigDict()
    config.task = args["task"]

    config.model = ml_collections.ConfigDict()
    config.model.name = args["model"]
    # Tokenizer directory/name; empty means the model's own checkpoint.
    config.model.tokenizer = ""
    config.model.dtype = "float32"
    config.model.hidden_dropout_prob = 0.1
    config.model.attention_probs_dropout_prob = 0.1
    # A shallower copy of the model (DistilBERT-style student): `truncate_to` N keeps N
    # evenly spaced layers (0, L/N, ...), `keep_layers` names them; 0 / () keep all.
    config.model.truncate_to = 0
    config.model.keep_layers = ()

    config.data = ml_collections.ConfigDict()
    config.data.source = "tsv"  # or "tfds"
    config.data.root = ""  # empty means $BERTJAX_DATA
    config.data.max_seq_length = 128
    config.data.train_limit = 0  # 0 means every example
    config.data.eval_limit = 0
    config.data.eval_split = ""  # empty means the task's dev split
    # Batches are padded to a multiple of this: finer pads less (SST-2 train: 2.56x its
    # real tokens at 32, 1.30x at 8) and compiles more lengths (3 -> 9).
    config.data.bucket_multiple = 32

    # Matmul arithmetic of every forward and backward (methods/precision.py): "fp32", or
    # "bf16" (bfloat16 operands, float32 accumulation and master weights).
    config.precision = ml_collections.ConfigDict()
    config.precision.compute = "fp32"

    config.train = ml_collections.ConfigDict()
    config.train.num_epochs = 3.0
    config.train.batch_size = 32
    config.train.eval_batch_size = 64
    config.train.learning_rate = 1e-4
    config.train.warmup_ratio = 0.1
    config.train.weight_decay = 0.01
    config.train.max_grad_norm = 1.0
    config.train.seed = 0
    config.train.log_every_steps = 20
    config.train.eval_every_epochs = 1
    # Compile the other padded lengths' steps on a background thread while the first ones
    # train (bertjax/train/ahead.py); changes no result, only when XLA's time is spent.
    config.train.compile_ahead = True

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 200
    config.checkpoint.keep = 2

    config.export = True
    # Smoke runs (tiny data, one short epoch) check that things run; results.json and the
    # report mark their numbers as such.
    config.smoke = bool(args["smoke"])
    # A fine-tuned teacher (HF layout, e.g. a finetune run's export/): when set, results.json
    # reports label and probability loyalty to it (Xu et al. 2021).
    config.teacher = ""

    if args["smoke"]:
        config.data.max_seq_length = 64
        config.data.train_limit = 64
        config.data.eval_limit = 64
        config.train.num_epochs = 1.0
        config.train.batch_size = 16
        config.train.eval_batch_size = 32
        config.train.log_every_steps = 1
        config.checkpoint.every_steps = 2
        config.checkpoint.keep = 1  # a smoke run resumes from its latest step only
    return config
