"""Merges the models of every train instance (fan-in) into one weighted model."""
import json

import mlflow

from common import input_dir, output_dir

models = sorted(input_dir("models").rglob("model.json"))
if not models:
    raise SystemExit("report: no model.json in the inputs")
total: dict[str, list[float]] = {}
counts: dict[str, int] = {}
for path in models:
    m = json.loads(path.read_text())
    for sp, centroid in m["centroids"].items():
        n = m["counts"][sp]
        acc = total.setdefault(sp, [0.0] * len(centroid))
        for i, v in enumerate(centroid):
            acc[i] += v * n
        counts[sp] = counts.get(sp, 0) + n
merged = {sp: [v / counts[sp] for v in acc] for sp, acc in total.items()}
(output_dir() / "merged_model.json").write_text(json.dumps({"centroids": merged, "counts": counts, "models": len(models)}, indent=1))
with mlflow.start_run():
    mlflow.log_metric("models_merged", len(models))
print(f"report: merged {len(models)} models covering {sum(counts.values())} rows")
