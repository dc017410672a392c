"""Early exit (DeeBERT, PABEE): exit heads after every layer of a fine-tuned model.

  python -m bertjax.main --config=configs/early_exit.py:strategy=pabee,task=mrpc,\
model=runs/teacher/mrpc/export --workdir=runs/mrpc-pabee

Arguments: `strategy` (deebert: exit heads with their own poolers trained on a frozen
fine-tuned backbone, DeeBERT's second stage — its first stage is the fine-tuning that
made `model`; pabee: classifiers sharing the model's pooler, trained jointly with the
backbone on the layer-weighted loss), `model` (a fine-tuned checkpoint directory),
`pooling` (cls: the exit heads read [CLS], as in the papers; mean: the masked mean of
the layer's tokens, through each head's own pooler), `task`, `smoke`.

results.json's `early_exit` scores every entropy threshold and patience of the sweep
(`--config.early_exit.thresholds=0.1,0.3 --config.early_exit.patiences=2,3`) from
every layer's logits: score, mean exit layer, share of examples per exit layer. The
measured latency of the exits: `benchmarks/early_exit.py WORKDIR/export`.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune

ARGS = dict(**finetune.BASE_ARGS, strategy="pabee", pooling="cls")
# Our choices (the papers fine-tune BERT-base at 2e-5): exit heads alone learn from a
# random init, so DeeBERT's stage 2 uses a larger rate; PABEE starts from the fine-tuned
# model, so a small one.
LEARNING_RATES = {"deebert": 1e-3, "pabee": 5e-5}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build(args)
    config.early_exit = ml_collections.ConfigDict()
    config.early_exit.strategy = args["strategy"]
    config.early_exit.pooling = args["pooling"]
    config.early_exit.thresholds = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    config.early_exit.patiences = (1, 2, 3, 4, 5)
    config.early_exit.delta = 0.1
    if args["strategy"] in LEARNING_RATES:  # an unknown one is named by validation
        config.train.learning_rate = LEARNING_RATES[args["strategy"]]
    config.train.num_epochs = 2.0
    return config
