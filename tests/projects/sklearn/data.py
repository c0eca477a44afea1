import os

from common import PARTS, features

out = os.environ["CONCURRENT_OUTPUT_DIR"]
data = features()
for name, a, b in PARTS:
    part = data.iloc[a:b]
    path = os.path.join(out, name)
    if name.endswith(".csv"):
        part.to_csv(path, index=False)
    elif name.endswith(".json"):
        part.to_json(path, orient="records")
    else:
        part.to_parquet(path)
