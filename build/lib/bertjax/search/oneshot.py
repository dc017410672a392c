"""One-shot evaluation of the supernet's sub-models: the search's fitness.

A sub-model is scored without training it: the supernet runs with the architecture's
masks (`submodel.mask_arrays`, data: one compiled graph for every candidate) on the
dev inputs of a small task, and the fitness is minus the supernet's own training
loss there (`general.supernet_loss`: last-layer attention scores and projected hidden
state against the pretrained teacher's). The paper instead scores each candidate by
the dev metric of the fine-tuned SuperPLM; on this CPU one fine-tuning per candidate is
out of reach, so the fitness measures how well a sub-model keeps the teacher's
representation of the task's inputs, not the task metric itself.

The teacher's intermediates are computed once per batch and reused for every candidate.
"""

from pathlib import Path

import jax
import numpy as np

from bertjax import models
from bertjax.data import pipeline, tasks, tokenizer
from bertjax.models.submodel import Arch, mask_arrays
from bertjax.pretrain import steps
from bertjax.pretrain.general import PROJECTION_FILE
from methods.distill.tinybert import PARAMS_KEY

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "weights")


class OneShot:
    """`fitness(arch) -> float` (higher is better) of a trained supernet.

    `supernet_dir`: a supernet run's workdir (its `export/` and `projection.npz`)."""

    def __init__(
        self,
        supernet_dir: str | Path,
        teacher: str,
        task: str = "stsb",
        limit: int = 128,
        seq_len: int = 64,
        batch_size: int = 32,
    ):
        supernet_dir = Path(supernet_dir)
        self.model, params = models.load_pretrained(supernet_dir / "export", head=None)
        with np.load(supernet_dir / PROJECTION_FILE) as data:
            projection = {key: data[key] for key in data.files}
        self.params = {**params, PARAMS_KEY: {"projection": projection}}
        self.teacher, teacher_params = models.load_pretrained(teacher, head=None)
        tok = tokenizer.load_tokenizer(supernet_dir / "export")
        encoded = tokenizer.load_encoded(task, tasks.eval_split(task), tok, seq_len, limit=limit)
        collect = ("hidden", "attn_scores")
        self.batches = []
        for batch in pipeline.eval_batches(encoded, batch_size):
            batch = {key: batch[key] for key in MODEL_KEYS}
            inter = steps.apply_model(self.teacher, teacher_params, batch, collect=collect)
            self.batches.append((batch, inter))
        self.loss_fn = jax.jit(steps.supernet_loss_fn(self.model, self.teacher))
        self.task = task

    def loss(self, arch: Arch) -> float:
        """The mean supernet loss of `arch` over the dev batches."""
        masks = mask_arrays(self.model.config, arch)
        losses = [
            float(self.loss_fn(self.params, inter, batch, masks)[0])
            for batch, inter in self.batches
        ]
        return float(np.mean(losses))

    def __call__(self, arch: Arch) -> float:
        return -self.loss(arch)
