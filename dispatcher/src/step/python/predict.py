"""Batch inference for one Concurrent instance: the model is loaded once, then every input file
of the partition (csv, json, parquet) is predicted, one predictions file per input file.

Usage: python predict.py <model dir> <manifest.json> <outputs dir>
The manifest lists [input name, relative path, absolute path] triples. Predictions are written
as MLflow's `models predict` writes them: {"predictions": [...]}, to
<outputs>/predictions/<input>/<relative path>.json.
"""

import json
import os
import sys
import time


def read(path):
    import pandas as pd

    ext = path.rsplit(".", 1)[-1].lower()
    if ext == "csv":
        return pd.read_csv(path)
    if ext == "parquet":
        return pd.read_parquet(path)
    if ext == "json":
        with open(path) as f:
            data = json.load(f)
        # MLflow's serving formats, and plain records.
        if isinstance(data, dict) and "dataframe_split" in data:
            s = data["dataframe_split"]
            return pd.DataFrame(s["data"], columns=s.get("columns"))
        if isinstance(data, dict) and "dataframe_records" in data:
            return pd.DataFrame(data["dataframe_records"])
        if isinstance(data, dict) and "inputs" in data:
            return pd.DataFrame(data["inputs"])
        return pd.DataFrame(data)
    raise ValueError(f"{path}: not a csv, json or parquet file")


def jsonable(predictions):
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    if isinstance(predictions, (pd.Series, np.ndarray)):
        return predictions.tolist()
    return predictions


def main():
    model_dir, manifest, outputs = sys.argv[1:4]
    started = time.time()
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_dir)
    print(f"model loaded once in {time.time() - started:.1f} s", flush=True)
    with open(manifest) as f:
        files = json.load(f)
    for name, rel, path in files:
        frame = read(path)
        predictions = jsonable(model.predict(frame))
        out = os.path.join(outputs, "predictions", name, rel + ".json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump({"predictions": predictions}, f, default=str)
        print(f"{name}/{rel}: {len(frame)} rows predicted", flush=True)


if __name__ == "__main__":
    main()
