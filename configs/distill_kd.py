"""Logit distillation (Hinton; DistilBERT/PKD) from a fine-tuned teacher into a student.

  python -m bertjax.main --config=configs/distill_kd.py:task=mrpc,student=minilm-l3-h384,\
teacher=runs/teacher/mrpc/export --workdir=runs/mrpc-kd-l3

Arguments: `teacher` (a fine-tuned model directory, e.g. a finetune run's
export/; or `--config.teacher=DIR`), `student`, `task`, `smoke`, `temperature`,
`alpha` (weight of the KD term; the hard-label loss gets 1 - alpha) and `kind`
(soft_ce or mse on logits; regression tasks always use MSE).

`student` is a model name or directory (e.g. `minilm-l3-h384`), a random size
(e.g. `mini`, 4 x 256, tokenizer from the teacher), or `teacher:N`: the teacher
truncated to N layers, DistilBERT-style (every other layer: layers
round(i * L / N) are copied; `--config.model.keep_layers` picks others).

`--config.distill.cache_teacher=True` predicts the teacher's logits once per
training example (kept in WORKDIR/teacher_logits.npz) instead of running the
teacher in every step: same training (dropout is off in the teacher), faster.
"""

import ml_collections

from bertjax.config_args import parse_arg
from bertjax.models import variants
from configs import finetune

# The `:arg` keys of every distillation config (a student and its teacher).
STUDENT_ARGS = dict(student="minilm-l3-h384", teacher="", task="rte", smoke=False, temperature=2.0)
ARGS = dict(**STUDENT_ARGS, alpha=0.5, kind="soft_ce")


def student_config(args: dict) -> ml_collections.ConfigDict:
    """The finetune config of `args["student"]`, distilling from `args["teacher"]`."""
    student = str(args["student"])
    truncate = 0
    if student.startswith("teacher:"):
        if not args["teacher"]:
            raise ValueError("student=teacher:N needs teacher=DIR")
        layers = student.split(":", 1)[1]
        if not layers.isdigit():
            raise ValueError(f"config argument student={student}: N in teacher:N is a layer count")
        model, truncate = args["teacher"], int(layers)
    else:
        model = student
    config = finetune.build({**args, "model": model})
    config.teacher = args["teacher"]
    config.model.truncate_to = truncate
    if variants.is_variant(model) and args["teacher"]:
        config.model.tokenizer = args["teacher"]  # a random student shares the teacher's vocab
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = student_config(args)
    config.distill = kd_block(args)
    return config


def kd_block(args: dict) -> ml_collections.ConfigDict:
    """The `config.distill` block of logit KD (`kind`, `temperature`, `alpha` of `args`);
    other configs add it to distill while they train (e.g. prune_structured.py)."""
    block = ml_collections.ConfigDict()
    block.kind = args.get("kind", ARGS["kind"])
    block.temperature = args.get("temperature", ARGS["temperature"])
    block.alpha = args.get("alpha", ARGS["alpha"])
    # Teacher logits predicted once per training example instead of every step.
    block.cache_teacher = False
    return block
