"""Fits a logistic regression with one hyperparameter setting on a training split of iris,
logs its validation loss and accuracy and the model (what one point of a sweep does)."""
import argparse
import os

import mlflow
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

p = argparse.ArgumentParser()
p.add_argument("--C", type=float, required=True)
p.add_argument("--fit-intercept", default="true")
args = p.parse_args()
X, y = load_iris(return_X_y=True, as_frame=True)
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
model = LogisticRegression(C=args.C, fit_intercept=args.fit_intercept == "true", max_iter=1000)
model.fit(X_train, y_train)
val_loss = log_loss(y_val, model.predict_proba(X_val))
val_accuracy = accuracy_score(y_val, model.predict(X_val))
print(f"C={args.C} fit_intercept={args.fit_intercept}: val_loss={val_loss:.4f} val_accuracy={val_accuracy:.3f}")
with mlflow.start_run():
    mlflow.log_metrics({"val_loss": val_loss, "val_accuracy": val_accuracy})
    mlflow.sklearn.log_model(model, name="model", input_example=X.head(2))
with open(os.path.join(os.environ["CONCURRENT_OUTPUT_DIR"], "setting.txt"), "w") as f:
    f.write(f"C={args.C} fit_intercept={args.fit_intercept}\n")
