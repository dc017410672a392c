"""Metric logs of a run: JSON lines (for tools) and TensorBoard (for people)."""

import json
from pathlib import Path
from typing import Any


class MetricWriter:
    """Appends `{"step": s, **values}` lines to `metrics.jsonl` and scalars to TensorBoard.

    On resume, lines past the restored step are dropped first, so a killed and
    resumed run leaves the same log as an uninterrupted one.
    """

    def __init__(self, workdir: str | Path, *, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        kept = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, prefix: str = "", **values: Any) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{f"{prefix}{k}": v for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete record of a JSONL file (a line cut by a kill is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
