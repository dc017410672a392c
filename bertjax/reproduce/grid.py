"""What `python -m bertjax.reproduce` runs: budgets, method families and their cells.

A cell is one method on one task (a config module, its `:arg` string and field
overrides), run once per seed. Every cell but the teacher's starts from, or distils
from, the task's teacher of the same seed (`{teacher}` in args and overrides is its
export directory), so a seed's spread includes its teacher's. A cell with a `start`
begins from that cell's export of the same seed instead (`{start}`): the `stack` family
chains the north-star candidate, KD student -> structured pruning -> int8 storage.

Budgets fix sizes and epochs:
  smoke  a tiny random model (2 layers, 128 wide), 64 examples, seq 64: minutes; proves
         the pipeline (a test runs it), its numbers mean nothing
  small  MiniLM-L6 on the shared data, about one CPU day for the five tasks x 3 seeds:
         tasks in full but SST-2 (its first 8,000 sentences), 3 teacher epochs, 1-2
         epochs per compression method
  full   the papers' epochs on full data (3 teacher epochs, 3 per method; for an
         accelerator)
"""

import dataclasses

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
FAMILIES = (
    "pruning", "layer_drop", "quantization", "bitfit", "distillation", "lowrank",
    "early_exit", "token_reduction", "stack",
)  # fmt: skip
TEACHER = "teacher"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes and epochs of one budget."""

    name: str
    model: str  # the pretrained model the teacher is fine-tuned from
    teacher_epochs: float
    method_epochs: float
    distill_epochs: float
    student_layers: int  # layers of the distilled / truncated students
    drop: int  # layers removed by layer dropping
    train_limits: dict  # task -> train examples (0: all)
    smoke: bool = False
    latency: bool = True  # measure batch-1 / batch-32 latency vs the PyTorch teacher
    # With latency: the seed-0 teacher in PyTorch fp32 and ONNX Runtime int8 (peers.py);
    # not for the smoke budget's random models (an ONNX export and two dev passes).
    peers: bool = True


BUDGETS = {
    "smoke": Budget("smoke", "tiny", 1, 1, 1, 1, 1, {}, smoke=True, peers=False),
    "small": Budget("small", "minilm-l6-h384", 3, 1, 2, 3, 3, {"sst2": 8000}),
    "full": Budget("full", "minilm-l6-h384", 3, 3, 3, 3, 3, {}),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One method on one task: `configs/{config}.py:{args}` plus field `overrides`."""

    name: str
    family: str
    config: str
    args: str
    overrides: tuple[tuple[str, object], ...] = ()
    # The cell (same task and seed) whose export this one starts from: `{start}` in args.
    start: str = ""

    def needs_teacher(self) -> bool:
        return self.name != TEACHER

    def needs(self) -> tuple[str, ...]:
        """The cells (same task and seed) whose exports this one reads: its teacher, the
        cell it starts from."""
        return (TEACHER,) * self.needs_teacher() + (self.start,) * bool(self.start)


def starts(cells: list[Cell]) -> set[str]:
    """The cells others start from: their exports stay (like the teachers')."""
    return {cell.start for cell in cells if cell.start}


def select(cells: list[Cell], names) -> list[Cell]:
    """The cells named, with what they need (the teacher, the cells they start from,
    transitively), in run order."""
    by_name = {cell.name: cell for cell in cells}
    unknown = set(names) - set(by_name)
    if unknown:
        raise ValueError(f"unknown cells {sorted(unknown)}; known: {', '.join(by_name)}")
    wanted, todo = set(), list(names)
    while todo:
        cell = by_name[todo.pop()]
        if cell.name not in wanted:
            wanted.add(cell.name)
            todo += cell.needs()
    return [cell for cell in cells if cell.name in wanted]


def cells(budget: Budget, families=FAMILIES) -> list[Cell]:
    """The teacher, then every cell of `families`, in run order."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    method = (("train.num_epochs", budget.method_epochs),)
    distill = (("train.num_epochs", budget.distill_epochs),)
    n, drop = budget.student_layers, budget.drop
    teacher = "model={teacher}"
    student = f"teacher={{teacher}},student=teacher:{n}"
    out = [Cell(TEACHER, "finetune", "finetune", f"model={budget.model}",
                (("train.num_epochs", budget.teacher_epochs),))]  # fmt: skip
    grid = {
        "pruning": [
            Cell("magnitude-90", "pruning", "prune_magnitude", f"{teacher},sparsity=0.9", method),
            Cell("movement-90", "pruning", "prune_movement", f"{teacher},sparsity=0.9", method),
            Cell("structured-h5-f5", "pruning", "prune_structured", f"{teacher},heads=0.5,ffn=0.5",
                 method),
        ],
        "layer_drop": [
            Cell(f"drop{drop}-{strategy}", "layer_drop", "layer_drop",
                 f"{teacher},drop={drop},strategy={strategy}", method)
            for strategy in ("top", "bottom", "even")
        ],
        "quantization": [
            Cell("ptq-w8a8", "quantization", "quant_ptq", f"{teacher},calibration=minmax"),
            Cell("ptq-int8", "quantization", "quant_ptq", f"{teacher},int8=true"),
            Cell("qat-w8a8", "quantization", "quant_qat", f"{teacher},wbits=8,abits=8", method),
        ],
        "bitfit": [
            Cell("bitfit", "bitfit", "bitfit", f"model={budget.model}",
                 (("train.num_epochs", budget.teacher_epochs), ("train.learning_rate", 1e-3))),
        ],
        "distillation": [
            Cell(f"l{n}-alone", "distillation", "finetune", teacher,
                 (*distill, ("model.truncate_to", n))),
            Cell(f"l{n}-kd", "distillation", "distill_kd", student,
                 distill),
            *[
                Cell(f"l{n}-tinybert-{m}", "distillation", "distill_tinybert",
                     f"{student},map={m}", distill)
                for m in ("uniform", "top", "bottom")
            ],
            Cell(f"l{n}-emd", "distillation", "distill_emd", student,
                 distill),
            Cell(f"l{n}-theseus", "distillation", "distill_theseus",
                 f"teacher={{teacher}},successors={n}", distill),
        ],
        "lowrank": [
            Cell("svd-ratio-5", "lowrank", "lowrank", f"{teacher},rank=0,ratio=0.5", method),
            Cell("ladabert-5", "lowrank", "ladabert", "teacher={teacher},target_ratio=0.5",
                 distill),
        ],
        "token_reduction": [
            Cell("tr-bert-a1", "token_reduction", "token_reduction", "teacher={teacher},alpha=1.0",
                 method),
        ],
        "early_exit": [
            *[
                Cell(f"early-exit-{s}", "early_exit", "early_exit", f"{teacher},strategy={s}",
                     method)
                for s in ("deebert", "pabee")
            ],
            # Ours: exit heads on the token mean (MiniLM's shallow [CLS] is uninformative).
            Cell("early-exit-deebert-mean", "early_exit", "early_exit",
                 f"{teacher},strategy=deebert,pooling=mean", method),
        ],
        # The north-star candidate (benchmarks/results/runtime.md): the KD student, its
        # heads and FFN neurons halved (1 epoch, lr 5e-5), then stored in int8 (W8A8).
        "stack": [
            # The KD student alone in int8 (3 x 12 heads x FFN 1536: 8.4x the PyTorch
            # teacher at batch 32, benchmarks/results/runtime.md, session 15).
            Cell(f"l{n}-kd-int8", "stack", "quant_ptq", "model={start},int8=true",
                 start=f"l{n}-kd"),
            Cell(f"l{n}-kd-h5-f5", "stack", "prune_structured", "model={start},heads=0.5,ffn=0.5",
                 (*method, ("train.learning_rate", 5e-5)), start=f"l{n}-kd"),
            Cell(f"l{n}-kd-h5-f5-int8", "stack", "quant_ptq", "model={start},int8=true",
                 start=f"l{n}-kd-h5-f5"),
            # The same, the pruning step also distilling the teacher's logits.
            Cell(f"l{n}-kd-h5-f5-kd", "stack", "prune_structured",
                 "model={start},heads=0.5,ffn=0.5,teacher={teacher}",
                 (*method, ("train.learning_rate", 5e-5)), start=f"l{n}-kd"),
            Cell(f"l{n}-kd-h5-f5-kd-int8", "stack", "quant_ptq", "model={start},int8=true",
                 start=f"l{n}-kd-h5-f5-kd"),
            # One layer deeper: its shapes (n+1 layers, 6 heads, FFN 768, int8) still time
            # at >= 8x the PyTorch teacher (benchmarks/results/runtime.md, session 14).
            Cell(f"l{n + 1}-kd", "stack", "distill_kd",
                 f"teacher={{teacher}},student=teacher:{n + 1}", distill),
            Cell(f"l{n + 1}-kd-h5-f5-kd", "stack", "prune_structured",
                 "model={start},heads=0.5,ffn=0.5,teacher={teacher}",
                 (*method, ("train.learning_rate", 5e-5)), start=f"l{n + 1}-kd"),
            Cell(f"l{n + 1}-kd-h5-f5-kd-int8", "stack", "quant_ptq", "model={start},int8=true",
                 start=f"l{n + 1}-kd-h5-f5-kd"),
            # No layer removed: the teacher's heads and FFN halved with KD, int8 (6 x 6 x
            # 768: 9.2x at batch 32, session 15).
            Cell("h5-f5-kd", "stack", "prune_structured",
                 "model={teacher},heads=0.5,ffn=0.5,teacher={teacher}",
                 (*method, ("train.learning_rate", 5e-5))),
            Cell("h5-f5-kd-int8", "stack", "quant_ptq", "model={start},int8=true",
                 start="h5-f5-kd"),
            # The same pruned for as many epochs as the teacher trained (small budget: 3, not
            # 1): added after seed 1 of h5-f5-kd-int8 kept only 72.5 % of CoLA's MCC.
            Cell("h5-f5-kd-long", "stack", "prune_structured",
                 "model={teacher},heads=0.5,ffn=0.5,teacher={teacher}",
                 (("train.num_epochs", budget.teacher_epochs), ("train.learning_rate", 5e-5))),
            Cell("h5-f5-kd-long-int8", "stack", "quant_ptq", "model={start},int8=true",
                 start="h5-f5-kd-long"),
        ],
    }  # fmt: skip
    for family in FAMILIES:
        if family in families:
            out.extend(grid[family])
    names = [cell.name for cell in out]
    for index, cell in enumerate(out):
        if cell.start and cell.start not in names[:index]:
            (family,) = {c.family for group in grid.values() for c in group if c.name == cell.start}
            raise ValueError(f"{cell.name} starts from {cell.start}: add its family {family!r}")
    return out
