import argparse, os

from sklearn.datasets import load_iris

p = argparse.ArgumentParser()
p.add_argument("--files", type=float, default=100)
n = int(p.parse_args().files)
data = load_iris(as_frame=True).data
out = os.environ["CONCURRENT_OUTPUT_DIR"]
for i in range(n):
    data.sample(n=30, random_state=i).to_csv(os.path.join(out, f"batch-{i:03d}.csv"), index=False)
