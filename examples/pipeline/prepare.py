"""Splits data/iris.csv into `parts` CSV files, round-robin, each with the header."""
import argparse
import pathlib
import sys

import mlflow

from common import output_dir

parser = argparse.ArgumentParser()
parser.add_argument("--parts", type=float, required=True)
parser.add_argument("--fail", default="no")
args = parser.parse_args()
if args.fail == "yes":
    sys.exit("prepare: failing on purpose because fail=yes")
parts = int(args.parts)
if parts < 1:
    sys.exit(f"prepare: parts must be at least 1, got {parts}")

lines = pathlib.Path("data/iris.csv").read_text().strip().splitlines()
header, rows = lines[0], lines[1:]
out = output_dir()
for i in range(parts):
    chunk = rows[i::parts]
    (out / f"part-{i}.csv").write_text("\n".join([header, *chunk]) + "\n")

with mlflow.start_run():
    mlflow.log_metric("rows", len(rows))
    mlflow.log_metric("parts", parts)
print(f"prepare: wrote {parts} parts of {len(rows)} rows")
