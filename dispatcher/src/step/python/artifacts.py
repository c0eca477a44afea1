"""A step's inputs and outputs through MLflow's own artifact repositories, for runs whose
artifacts do not go through the tracking server's proxy (s3://, gs://, wasbs://, dbfs:/, a shared
filesystem path...): MLflow's Python client speaks every store.

Usage:
  python artifacts.py download <manifest.json>      [[run id, artifact path, destination], ...]
  python artifacts.py upload <run id> <local path> <artifact dir>
"""

import json
import os
import shutil
import sys
import tempfile


def main():
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    command = sys.argv[1]
    if command == "download":
        with open(sys.argv[2]) as f:
            jobs = json.load(f)
        for run_id, path, dest in jobs:
            with tempfile.TemporaryDirectory() as tmp:
                got = client.download_artifacts(run_id, path, tmp)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.move(got, dest)
        print(f"downloaded {len(jobs)} file(s) with MLflow's artifact repository", flush=True)
    elif command == "upload":
        run_id, local, artifact_dir = sys.argv[2:5]
        if os.path.isdir(local):
            client.log_artifacts(run_id, local, artifact_dir)
        else:
            client.log_artifact(run_id, local, artifact_dir)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
