"""Fits a nearest-centroid classifier on the CSV files of this instance's partition."""
import argparse
import json
import sys

import mlflow

from common import input_dir, output_dir, partition, read_csv

parser = argparse.ArgumentParser()
parser.add_argument("--smoothing", type=float, default=0.0)
parser.add_argument("--fail", default="no")
args = parser.parse_args()

files = sorted(p for p in input_dir("data").rglob("*.csv"))
print(f"train {partition()}: {len(files)} file(s): {[f.name for f in files]}")
if args.fail == "yes":
    sys.exit(f"train {partition()}: failing on purpose because fail=yes")

features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
sums: dict[str, list[float]] = {}
counts: dict[str, int] = {}
for f in files:
    for row in read_csv(f):
        s = sums.setdefault(row["species"], [0.0] * len(features))
        for i, name in enumerate(features):
            s[i] += float(row[name])
        counts[row["species"]] = counts.get(row["species"], 0) + 1
centroids = {sp: [(v + args.smoothing) / counts[sp] for v in s] for sp, s in sums.items()}

out = output_dir()
(out / "model.json").write_text(json.dumps({"features": features, "centroids": centroids, "counts": counts}, indent=1))
(out / "seen_files.txt").write_text("\n".join(f.name for f in files) + "\n")
with mlflow.start_run():
    mlflow.log_metric("rows", sum(counts.values()))
    mlflow.log_metric("files", len(files))
print(f"train {partition()}: {sum(counts.values())} rows, classes {sorted(counts)}")
