"""The run-directory contract: the name of every file a layermod command writes into its ``--out`` directory.

Every command writes one run directory, with a JSON file as the source of truth and its twins (CSV tables, PNG
figures, Markdown) beside it; ``layermod report`` and commands that reuse a run (``prune --curve``, ``train
--resume``) find the files by these names. Each result type saves, loads and draws itself under them
(``save(dir)``, ``load(path)``, ``plot()``); nothing else spells a file name out.

Decisions, on purpose:

* **Names, not paths.** Constants are bare file names; ``dir / CURVE_JSON`` is the file, and a loader given a
  directory reads the name inside it.
* **The JSON last.** A result's JSON file is written after its twins, so a JSON file present means its run's
  files are complete.
* **One commit per run.** A command that writes its run directory in one go (``curve``, ``attack``, ``compare``,
  ``eval``, ``prune``, ``prune-study``, ``demo``) writes it into a hidden sibling with :data:`RUN_JSON` (every
  file and its SHA-256) last, and swaps it in (:mod:`layermod.io.runs`); it replaces only a directory holding
  nothing but :data:`RUN_FILES`. ``train`` and ``sweep`` grow their directories step by step instead, each
  step committed on its own (checkpoints by their sidecars, sweep items by a rename).
* **Checkpoints by stem.** A checkpoint is a pair ``STEM.safetensors`` + ``STEM.json``
  (:data:`WEIGHTS_SUFFIX`, :data:`SIDECAR_SUFFIX`; see :mod:`layermod.models.checkpoint`): :data:`BEST` and
  :data:`LAST` are stems, :data:`BEST_JSON` the sidecar the report reads.
"""

from __future__ import annotations

__all__ = [
    "ATTACK_CSV",
    "ATTACK_JSON",
    "ATTACK_PNG",
    "BEST",
    "BEST_JSON",
    "CKA_CSV",
    "COMPARE_JSON",
    "COMPARE_PNG",
    "COMPARISON_CSV",
    "COMPARISON_JSON",
    "COMPARISON_MD",
    "COMPARISON_PNG",
    "CURVE_CSV",
    "CURVE_JSON",
    "CURVE_PNG",
    "D_CSV",
    "DYNAMICS_JSON",
    "DYNAMICS_PNG",
    "EMBEDDING_JSON",
    "EMBEDDING_PNG",
    "EVAL_JSON",
    "ITEMS_DIR",
    "ITEM_JSON",
    "LAST",
    "MATCHED_CSV",
    "MATCHED_JSON",
    "MATCHED_MD",
    "METRICS_CSV",
    "OPTIMIZER",
    "PARETO_PNG",
    "PLAN_JSON",
    "PRUNED",
    "REDUNDANCY_CSV",
    "REDUNDANCY_JSON",
    "REDUNDANCY_PNG",
    "REPORT_HTML",
    "RESULTS_CSV",
    "RESULTS_PARQUET",
    "RUN_FILES",
    "RUN_JSON",
    "SIDECAR_SUFFIX",
    "SUMMARY_PNG",
    "WEIGHTS_SUFFIX",
]

# `layermod curve`: the modularity curve (analysis.curve.Curve)
CURVE_JSON = "curve.json"
CURVE_CSV = "curve.csv"
CURVE_PNG = "curve.png"
# `layermod curve --views`: 2-D views and kNN graphs of a few layers (analysis.views.Views)
EMBEDDING_JSON = "embedding.json"
EMBEDDING_PNG = "embedding.png"
# the verdicts of the redundant layers (analysis.redundancy.Redundancy), written by its save
REDUNDANCY_JSON = "redundancy.json"
REDUNDANCY_CSV = "redundancy.csv"
REDUNDANCY_PNG = "redundancy.png"
# `layermod attack`: clean vs attacked curves (adversarial.curves.AdversarialCurves)
ATTACK_JSON = "attack.json"
ATTACK_CSV = "attack.csv"
ATTACK_PNG = "attack.png"
# `layermod compare`: D beside CKA (analysis.compare.LayerComparison)
COMPARE_JSON = "compare.json"
D_CSV = "d.csv"
CKA_CSV = "cka.csv"
COMPARE_PNG = "compare.png"
# `layermod train`: checkpoints, per-epoch metrics and, when tracked, the dynamics (analysis.dynamics.Dynamics)
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
BEST = "best"
BEST_JSON = BEST + SIDECAR_SUFFIX
LAST = "last"
OPTIMIZER = LAST + "-optimizer" + WEIGHTS_SUFFIX  # the optimizer state, committed with the last checkpoint
METRICS_CSV = "metrics.csv"
DYNAMICS_JSON = "dynamics.json"
DYNAMICS_PNG = "dynamics.png"
# `layermod prune`: the plan (pruning.plans.Plan), the pruned checkpoint, the methods compared
# (pruning.study.PruningComparison)
PLAN_JSON = "plan.json"
PRUNED = "pruned" + WEIGHTS_SUFFIX
COMPARISON_JSON = "comparison.json"
COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"
# `layermod prune-study`: every method at budgets matched by FLOPs and by parameters, over seeds
# (pruning.pareto.MatchedComparison); one Pareto figure per matched cost
MATCHED_JSON = "matched.json"
MATCHED_CSV = "matched.csv"
MATCHED_MD = "matched.md"
PARETO_PNG = {"flops": "pareto-flops.png", "params": "pareto-params.png"}
# `layermod eval --out`: the accuracy of a checkpoint (training.evaluation.Evaluation)
EVAL_JSON = "eval.json"
# `layermod sweep` / `layermod dynamics`: one curve run directory per item under ITEMS_DIR, each with its record
# (sweep.run), and the sweep's table and figure (sweep.results.SweepTable)
ITEMS_DIR = "items"
ITEM_JSON = "item.json"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
SUMMARY_PNG = "summary.png"
# `layermod demo`: the page over its run directory
REPORT_HTML = "report.html"
# the record of a run directory written in one commit (io.runs): its run id and every file's SHA-256
RUN_JSON = "run.json"
# every file a command that commits its run directory in one step may write: a directory holding only these
# (and hidden temporaries) may be replaced by a new run
RUN_FILES = frozenset({
    CURVE_JSON, CURVE_CSV, CURVE_PNG, EMBEDDING_JSON, EMBEDDING_PNG, ATTACK_JSON, ATTACK_CSV, ATTACK_PNG,
    COMPARE_JSON, D_CSV, CKA_CSV, COMPARE_PNG, EVAL_JSON, PLAN_JSON, PRUNED,
    PRUNED[: -len(WEIGHTS_SUFFIX)] + SIDECAR_SUFFIX, COMPARISON_JSON, COMPARISON_CSV, COMPARISON_MD,
    COMPARISON_PNG, MATCHED_JSON, MATCHED_CSV, MATCHED_MD, *PARETO_PNG.values(), REPORT_HTML, RUN_JSON,
})
