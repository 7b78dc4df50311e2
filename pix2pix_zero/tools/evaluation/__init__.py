"""Measuring edits: the paper's metrics (CLIP-Acc, structure distance), PIE-Bench's (Ju et al., ICLR 2024,
arXiv:2310.01506; evaluator cure-lab/PnPInversion evaluation/), masks, statistics, reports, and the two
commands built on them (evaluate.py: a folder of edits; pie_bench.py: the benchmark; commands.py:
their command lines)."""
