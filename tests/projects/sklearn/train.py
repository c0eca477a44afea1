import argparse, json, os

import mlflow
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from common import PARTS, features

p = argparse.ArgumentParser()
p.add_argument("--register", default="")
args = p.parse_args()
X, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=500).fit(X, y)
with mlflow.start_run():
    mlflow.sklearn.log_model(model, name="model", registered_model_name=args.register or None, input_example=X.head(2))
data = features()
expected = {name: model.predict(data.iloc[a:b]).tolist() for name, a, b in PARTS}
with open(os.path.join(os.environ["CONCURRENT_OUTPUT_DIR"], "expected.json"), "w") as f:
    json.dump(expected, f)
