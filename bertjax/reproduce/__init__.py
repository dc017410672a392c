"""`python -m bertjax.reproduce`: every method family's grid on the GLUE tasks, several
seeds, resumable, into one multi-seed table with claims and plots.

  python -m bertjax.reproduce --budget small --seeds 3 [--tasks rte mrpc] [--families ...]

writes `reproduction/{budget}/table.md` (per task and method: score mean ± std over
seeds, % of the teacher, params, shipped bytes, measured batch-1 / batch-32 latency vs
the PyTorch fp32 teacher, loyalty; the seed-0 teacher in PyTorch fp32 and ONNX Runtime
dynamic int8 as peer rows; then the claims table), `results.json` (everything gathered,
with each claim's numbers) and `plots.png` (the peers as reference markers). Runs live under
`runs/reproduce/{budget}/{task}/{cell}/seed{k}`; a finished cell is skipped, an
interrupted one resumes. On a new machine (runs directory gone) the committed results.json
brings the finished runs back (`restore.py`); only the exports an unfinished run needs are
retrained. `grid.py` says what runs, `cells.py` how, `peers.py` what the peers
measure, `claims.py` how a claim is decided.
"""
