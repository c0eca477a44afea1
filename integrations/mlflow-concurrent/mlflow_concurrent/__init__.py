"""Concurrent from Python: `Client` (see `client.py`), and the MLflow Projects backend
`mlflow run <uri> --backend concurrent --backend-config cfg.json`.

Submits the project as a one-node DAG to Concurrent's edge API and returns the MLflow run of the
step, so the MLflow CLI keeps working. The backend config (a JSON file or inline JSON):

    {"edge_url": "https://concurrent.example.com", "cluster": "main",
     "token_file": "~/.concurrent/token",           # or "token", or $CONCURRENT_TOKEN
     "image": "...", "resources": {"cpu": "2", "memory": "4Gi", "gpu": 0},
     "timeout_seconds": 3600,
     "wait": true}                                    # wait for the outcome (see below)

`mlflow run` waits only for its own backends (local, databricks): with any plugin backend it
returns once the run is submitted. So by default this backend prints where to watch the run
and returns; with `"wait": true` (or CONCURRENT_WAIT=1) it follows the run to its end, printing
each change, and fails (`mlflow run` exits non-zero) unless the run succeeded.
"""

import hashlib
import os
import time

from mlflow.entities import RunStatus
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun

from .client import Client, ConcurrentError, Conflict, Forbidden, Invalid, NotFound, Run, RunFailed, Unauthorized, Unavailable

__all__ = ["Client", "Run", "ConcurrentError", "Unauthorized", "Forbidden", "NotFound", "Invalid", "Conflict", "Unavailable", "RunFailed", "ConcurrentBackend"]

POLL_SECONDS = 1.0


def _token(config):
    if config.get("token"):
        return config["token"]
    if config.get("token_file"):
        with open(os.path.expanduser(config["token_file"])) as f:
            return f.read().strip()
    if os.environ.get("CONCURRENT_TOKEN"):
        return os.environ["CONCURRENT_TOKEN"]
    raise ConcurrentError("no token: set token, token_file in the backend config, or CONCURRENT_TOKEN")


_STATUS = {
    "pending": RunStatus.SCHEDULED,
    "running": RunStatus.RUNNING,
    "succeeded": RunStatus.FINISHED,
    "failed": RunStatus.FAILED,
    "cancelled": RunStatus.KILLED,
}


class ConcurrentSubmittedRun(SubmittedRun):
    def __init__(self, edge, dag_run_id, mlflow_run_id):
        super().__init__()
        self._edge = edge
        self._dag_run_id = dag_run_id
        self._mlflow_run_id = mlflow_run_id

    @property
    def run_id(self):
        return self._mlflow_run_id

    def _state(self):
        return self._edge.call("GET", f"/api/v1/runs/{self._dag_run_id}")

    def wait(self):
        while True:
            state = self._state()
            if state["status"] in ("succeeded", "failed", "cancelled"):
                if state.get("error"):
                    print(f"Concurrent run {self._dag_run_id}: {state['error']}")
                return state["status"] == "succeeded"
            time.sleep(POLL_SECONDS)

    def get_status(self):
        return _STATUS[self._state()["status"]]

    def cancel(self):
        self._edge.call("POST", f"/api/v1/runs/{self._dag_run_id}/cancel")


def _check_visible(run_id, tracking_uri, what):
    """The caller reads the runs from its own tracking URI: make sure they are there."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except Exception as e:  # any failure means the caller cannot follow the run
        raise ConcurrentError(
            f"{what} {run_id} is not in the tracking server {tracking_uri} ({e}), so the "
            "run was cancelled; set MLFLOW_TRACKING_URI to the MLflow server the Concurrent edge writes to"
        ) from e


def _wants_wait(config):
    wait = config.get("wait", os.environ.get("CONCURRENT_WAIT", ""))
    if isinstance(wait, str):
        return wait.strip().lower() in ("1", "true", "yes")
    return bool(wait)


def _follow(edge, dag_run_id):
    """Prints the run's status as it changes, until it ends; raises unless it succeeded."""
    from mlflow.exceptions import ExecutionException

    shown = None
    while True:
        state = edge.call("GET", f"/api/v1/runs/{dag_run_id}")
        instances = [i for n in state["nodes"] for i in n["instances"]]
        done = sum(1 for i in instances if i.get("state") == "succeeded")
        line = f"Concurrent run {dag_run_id}: {state['status']} ({done}/{len(instances)} steps done)"
        if line != shown:
            print(line, flush=True)
            shown = line
        if state["status"] in ("succeeded", "failed", "cancelled"):
            if state["status"] != "succeeded":
                raise ExecutionException(
                    f"the Concurrent run {dag_run_id} ended {state['status']}: {state.get('error') or 'no error recorded'}")
            return
        time.sleep(POLL_SECONDS)


class ConcurrentBackend(AbstractBackend):
    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        config = backend_config or {}
        url = config.get("edge_url") or os.environ.get("CONCURRENT_EDGE_URL", "")
        if not url:
            raise ConcurrentError("no edge_url in the backend config (or CONCURRENT_EDGE_URL)")
        edge = Client(url, _token(config))
        uri = project_uri if "://" in project_uri or project_uri.startswith("git@") else os.path.abspath(project_uri)
        name = "mlflow-run-" + hashlib.sha256(f"{uri}#{entry_point}".encode()).hexdigest()[:12]
        node = {"id": "main", "name": entry_point, "kind": "project", "uri": uri, "entryPoint": entry_point,
                "parameters": {k: str(v) for k, v in (params or {}).items()}}
        if version:
            node["version"] = version
        for key, field in (("image", "image"), ("resources", "resources"), ("timeout_seconds", "timeoutSeconds"), ("retries", "retries")):
            if key in config:
                node[field] = config[key]
        template = {"apiVersion": "concurrent/v1", "name": name, "description": f"mlflow run {uri} -e {entry_point}", "nodes": [node]}
        saved = edge.push_template(template)
        # `mlflow run` resolved the experiment (--experiment-name/-id, MLFLOW_EXPERIMENT_*, or
        # Default) in the caller's tracking server; the runs go there, as with any backend.
        try:
            # The version just saved: another `mlflow run` of the same project with other
            # parameters may save the next one meanwhile.
            dag_run = edge.start_run(name, cluster=config.get("cluster"), experiment_id=experiment_id,
                                     version=saved["version"])
        except ConcurrentError as e:
            if e.status == 422 and "experiment" in str(e):
                raise ConcurrentError(
                    f"{e}. `mlflow run` chose experiment {experiment_id} at the tracking URI {tracking_uri}; "
                    "set MLFLOW_TRACKING_URI to the MLflow server the Concurrent edge writes to", e.status) from e
            raise
        # The edge makes the parent run at once; the step's run is made by the agent that takes
        # the step, which may be a while on a busy cluster (or never, with no agent running).
        checked, began, hinted = False, time.monotonic(), 0.0
        while True:
            state = edge.call("GET", f"/api/v1/runs/{dag_run.id}")
            if state["status"] in ("failed", "cancelled"):
                raise ConcurrentError(f"the run ended {state['status']}: {state.get('error')}")
            parent = (state.get("mlflow") or {}).get("runId")
            if parent and not checked:
                try:
                    _check_visible(parent, tracking_uri, "the DAG run's MLflow parent run")
                except ConcurrentError:
                    dag_run.cancel()
                    raise
                checked = True
            attempts = [a for n in state["nodes"] for i in n["instances"] for a in i["attempts"]]
            if checked and attempts and attempts[0].get("mlflowRunId"):
                run_id = attempts[0]["mlflowRunId"]
                print(f"Concurrent run {dag_run.id}, step run {run_id}")
                print(f"  watch it:  {url.rstrip('/')}/#/dags/runs/{dag_run.id}")
                print(f"  follow it: concurrent runs get {dag_run.id} --follow")
                submitted = ConcurrentSubmittedRun(edge, dag_run.id, run_id)
                if _wants_wait(config):
                    _follow(edge, dag_run.id)
                else:
                    print("  `mlflow run` returns now, before the step has run (MLflow waits only for its own "
                          "backends); set \"wait\": true in the backend config to wait for the outcome.")
                return submitted
            waited = time.monotonic() - began
            if checked and waited - hinted >= 15:
                hinted = waited
                cluster = state.get("cluster") or config.get("cluster") or "(the edge's default)"
                print(f"Concurrent run {dag_run.id}: waiting {waited:.0f} s for an agent of cluster {cluster} to take "
                      f"the step; is one running (`concurrent agent --cluster {cluster}`)? Ctrl-C leaves the run queued; "
                      f"`concurrent runs cancel {dag_run.id}` cancels it.", flush=True)
            time.sleep(0.2)
