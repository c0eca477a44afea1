"""A Python client of Concurrent's edge API.

    from mlflow_concurrent import Client
    client = Client("https://concurrent.example.com", token)   # or $CONCURRENT_EDGE_URL / $CONCURRENT_TOKEN
    run = client.start_run("iris-pipeline", {"parts": "8"}, cluster="gpu")
    state = run.wait()              # raises RunFailed unless the run succeeded
    client.runs(template="iris-pipeline")
    run.cancel()

Errors are typed (`Unauthorized`, `Forbidden`, `NotFound`, `Invalid` with its problems,
`Conflict`, `Unavailable`); transient failures (the edge unreachable, 429, 502-504) are retried
with backoff, and starting a run carries an `Idempotency-Key`, so a retried start starts one run.
Standard library only.
"""

import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

TERMINAL = ("succeeded", "failed", "cancelled")


class ConcurrentError(Exception):
    """The edge API refused or failed a request."""

    def __init__(self, message, status=None, problems=None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


class Unauthorized(ConcurrentError):
    """401: no token, or an unknown or revoked one."""


class Forbidden(ConcurrentError):
    """403: the token's role may not do this."""


class NotFound(ConcurrentError):
    """404: no such template or run."""


class Invalid(ConcurrentError):
    """400: a malformed request or a template with problems (see `.problems`)."""


class Conflict(ConcurrentError):
    """409: a version conflict or a refused repair."""


class Unavailable(ConcurrentError):
    """The edge (or MLflow behind it) stayed unreachable through every retry."""


class RunFailed(ConcurrentError):
    """`Run.wait()`: the run ended failed or cancelled; `.state` is its last state."""

    def __init__(self, message, state):
        super().__init__(message)
        self.state = state


_BY_STATUS = {400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict}
_TRANSIENT = {429, 502, 503, 504}


class Client:
    def __init__(self, url=None, token=None, retries=5, timeout=60):
        self.url = (url or os.environ.get("CONCURRENT_EDGE_URL") or "").rstrip("/")
        self.token = token or os.environ.get("CONCURRENT_TOKEN")
        if not self.url:
            raise ConcurrentError("no edge URL: pass Client(url, ...) or set CONCURRENT_EDGE_URL")
        if not self.token:
            raise ConcurrentError("no token: pass Client(url, token) or set CONCURRENT_TOKEN (admins create tokens with POST /api/v1/tokens)")
        self.retries = retries
        self.timeout = timeout

    def _once(self, method, path, body, headers):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            text = resp.read().decode()
            return json.loads(text) if text else None

    def call(self, method, path, body=None, headers=None):
        """One API call, retried while the failure is transient; the decoded JSON answer."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, path, body, headers)
            except urllib.error.HTTPError as e:
                try:
                    error = json.loads(e.read().decode())["error"]
                except Exception:  # noqa: BLE001 - the status alone still says enough
                    error = {"message": e.reason, "details": []}
                message = f"{method} {path}: {error.get('message')} ({e.code})"
                if e.code in _TRANSIENT and attempt < self.retries:
                    pass
                elif e.code in _TRANSIENT:
                    raise Unavailable(message, e.code) from None
                else:
                    raise _BY_STATUS.get(e.code, ConcurrentError)(message, e.code, error.get("details")) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt == self.retries:
                    raise Unavailable(f"the edge at {self.url} is unreachable: {e}") from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 10)
        raise AssertionError("unreachable")

    def templates(self):
        return self.call("GET", "/api/v1/templates")

    def push_template(self, template, draft=False):
        """Saves `template` (a dict) as its next version."""
        q = "?draft=true" if draft else ""
        return self.call("PUT", f"/api/v1/templates/{urllib.parse.quote(template['name'])}{q}", template, {"If-Match": "*"})

    def start_run(self, template, parameters=None, cluster=None, version=None, experiment_id=None,
                  ignore_cache=False):
        """Starts a run; its MLflow runs go to `experiment_id` (which must exist in the MLflow
        server the edge writes to), or to the experiment `concurrent/<template>`. With
        `ignore_cache`, every step runs (reusing no cached result; new ones are still cached)."""
        body = {"template": template, "parameters": {k: str(v) for k, v in (parameters or {}).items()}}
        if ignore_cache:
            body["ignoreCache"] = True
        if cluster:
            body["cluster"] = cluster
        if experiment_id is not None:
            body["experimentId"] = str(experiment_id)
        if version is not None:
            body["version"] = version
        summary = self.call("POST", "/api/v1/runs", body, {"Idempotency-Key": uuid.uuid4().hex})
        return Run(self, summary["id"])

    def run(self, run_id):
        return Run(self, run_id)

    def runs(self, template=None, status=None, limit=20):
        q = {"limit": limit}
        if template:
            q["template"] = template
        if status:
            q["status"] = status
        return self.call("GET", "/api/v1/runs?" + urllib.parse.urlencode(q))


class Run:
    def __init__(self, client, run_id):
        self.client = client
        self.id = run_id

    def __repr__(self):
        return f"Run({self.id!r})"

    def state(self):
        return self.client.call("GET", f"/api/v1/runs/{self.id}")

    def wait(self, timeout=None, poll=1.0):
        """Waits for the run to end; its last state. Raises `RunFailed` unless it succeeded,
        `TimeoutError` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.state()
            if state["status"] in TERMINAL:
                if state["status"] != "succeeded":
                    raise RunFailed(f"run {self.id} ended {state['status']}: {state.get('error')}", state)
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {state['status']} after {timeout} s")
            time.sleep(poll)

    def cancel(self):
        return self.client.call("POST", f"/api/v1/runs/{self.id}/cancel", {})

    def retry(self):
        return self.client.call("POST", f"/api/v1/runs/{self.id}/retry", {})

    def rerun(self, node):
        return self.client.call("POST", f"/api/v1/runs/{self.id}/rerun", {"node": node})
