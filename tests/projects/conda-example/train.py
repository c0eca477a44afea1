"""Fits an ElasticNet of `target` on the other columns of table.csv and logs its scores and
the model to the active MLflow run (the one Concurrent made for this attempt)."""
import os
import sys

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

alpha = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
l1_ratio = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
table = pd.read_csv(os.path.join(os.path.dirname(os.path.abspath(__file__)), "table.csv"))
train, test = table.iloc[: len(table) * 3 // 4], table.iloc[len(table) * 3 // 4 :]
features = [c for c in table.columns if c != "target"]
model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=42)
model.fit(train[features], train["target"])
predicted = model.predict(test[features])
rmse = float(np.sqrt(mean_squared_error(test["target"], predicted)))
mae = float(mean_absolute_error(test["target"], predicted))
r2 = float(r2_score(test["target"], predicted))
print(f"ElasticNet(alpha={alpha}, l1_ratio={l1_ratio}): rmse={rmse:.4f} mae={mae:.4f} r2={r2:.4f}")
with mlflow.start_run():
    mlflow.log_metrics({"rmse": rmse, "mae": mae, "r2": r2})
    mlflow.sklearn.log_model(model, name="model")
