"""Fits a nearest-centroid classifier on the CSV files of this instance's partition."""
import argparse
import json
import os
import sys
import time

import mlflow

from common import input_dir, output_dir, partition, read_csv

parser = argparse.ArgumentParser()
parser.add_argument("--smoothing", type=float, default=0.0)
parser.add_argument("--fail", default="no", help="no, yes, or first-attempt (fail only on attempt 1)")
parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep first (to try timeouts and cancel)")
args = parser.parse_args()
attempt = os.environ.get("CONCURRENT_ATTEMPT", "1")

files = sorted(p for p in input_dir("data").rglob("*.csv"))
print(f"train {partition()}: {len(files)} file(s): {[f.name for f in files]}")
if args.sleep > 0:
    print(f"train {partition()}: sleeping {args.sleep} s", flush=True)
    time.sleep(args.sleep)
if args.fail == "yes" or (args.fail == "first-attempt" and attempt == "1"):
    sys.exit(f"train {partition()}: failing on purpose because fail={args.fail} (attempt {attempt})")

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



def nearest(row: dict) -> str:
    x = [float(row[name]) for name in features]
    return min(centroids, key=lambda sp: sum((a - b) ** 2 for a, b in zip(x, centroids[sp])))


rows = [row for f in files for row in read_csv(f)]
accuracy = sum(nearest(row) == row["species"] for row in rows) / max(len(rows), 1)

out = output_dir()
(out / "model.json").write_text(json.dumps({"features": features, "centroids": centroids, "counts": counts}, indent=1))
(out / "seen_files.txt").write_text("\n".join(f.name for f in files) + "\n")
with mlflow.start_run():
    mlflow.log_metric("rows", sum(counts.values()))
    mlflow.log_metric("files", len(files))
    mlflow.log_metric("accuracy", accuracy)
print(f"train {partition()}: {sum(counts.values())} rows, classes {sorted(counts)}, smoothing {args.smoothing}: accuracy {accuracy:.3f}")
