"""Prefect side of `make bench`, against a local Prefect server with a process work pool worker
(Prefect's recommended local setup). Two shapes of a chain of N trivial steps:

- `tasks`: one flow of N tasks in sequence (the Windmill benchmark's shape); the tasks are
  function calls inside one flow-run process.
- `flows`: each step its own flow run (`run_deployment`), so each runs in its own process
  started by the worker, as a Concurrent step does; the worker polls every second (Prefect's
  default is 10 s).

Prints one JSON line per run with the steps' own start and end times from Prefect's API.

Usage: python prefect_chain.py <prefect_home> <steps> <reps> [tasks|flows]
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

home, steps, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shape = sys.argv[4] if len(sys.argv) > 4 else "tasks"
os.makedirs(home, exist_ok=True)
with open(os.path.join(home, "bench_chain.py"), "w") as f:
    f.write(f'''
from prefect import flow, task

@task
def step(i: int) -> int:
    return i

@flow(name="bench-chain")
def chain():
    previous = None
    for i in range({steps}):
        previous = step.with_options(name=f"step-{{i:03d}}")(i, wait_for=[previous] if previous else None)

@flow(name="bench-step")
def one_step(i: int = 0) -> int:
    return i

@flow(name="bench-isolated")
def isolated():
    from prefect.deployments import run_deployment
    for i in range({steps}):
        run = run_deployment("bench-step/bench", parameters={{"i": i}}, flow_run_name=f"step-{{i:03d}}")
        if not run.state.is_completed():
            raise RuntimeError(f"step {{i}} ended {{run.state.type}}")
''')

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

port = free_port()
api = f"http://127.0.0.1:{port}/api"
env = dict(os.environ)
env.update({"PREFECT_HOME": home, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1"})
prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
procs = []

def start(args, name):
    log = open(os.path.join(home, f"{name}.log"), "w")
    p = subprocess.Popen([prefect, *args], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p

def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or "null")

def wait(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    sys.exit(f"prefect: {what} did not happen within {timeout} s; see {home}/*.log")

def ts(s):
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

try:
    start(["server", "start", "--host", "127.0.0.1", "--port", str(port)], "server")
    wait("the server to answer", lambda: call("GET", "/health") is True, 300)
    subprocess.run([prefect, "work-pool", "create", "bench-pool", "--type", "process", "--overwrite"], env=env, cwd=home, check=True, capture_output=True)
    deploy = ("from prefect import flow\n"
              "for entry in ('chain', 'one_step', 'isolated'):\n"
              "    flow.from_source(source='.', entrypoint=f'bench_chain.py:{entry}')"
              ".deploy(name='bench', work_pool_name='bench-pool')\n")
    subprocess.run([sys.executable, "-c", deploy], env=env, cwd=home, check=True, capture_output=True)
    start(["worker", "start", "--pool", "bench-pool", "--type", "process"], "worker")
    deployment = call("GET", "/deployments/name/" + ("bench-chain" if shape == "tasks" else "bench-isolated") + "/bench")
    step_deployment = call("GET", "/deployments/name/bench-step/bench")
    for rep in range(reps):
        triggered = time.time()
        run = call("POST", f"/deployments/{deployment['id']}/create_flow_run", {})
        state = lambda: call("GET", f"/flow_runs/{run['id']}")["state"]["type"]
        wait("the flow run to end", lambda: state() in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), 1800)
        if state() != "COMPLETED":
            sys.exit(f"prefect flow run ended {state()}; see {home}/worker.log")
        flow_run = call("GET", f"/flow_runs/{run['id']}")
        if shape == "tasks":
            # Task run states reach the server as events, shortly after the flow run ends.
            query = {"flow_runs": {"id": {"any_": [run["id"]]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
            recorded = lambda: [t for t in call("POST", "/task_runs/filter", query) if t["start_time"] and t["end_time"]]
        else:
            # The steps are flow runs of the bench-step deployment started within this run.
            query = {"deployments": {"id": {"any_": [step_deployment["id"]]}},
                     "flow_runs": {"start_time": {"after_": flow_run["start_time"]}}, "limit": 200}
            recorded = lambda: [t for t in call("POST", "/flow_runs/filter", query) if t["start_time"] and t["end_time"]]
        wait("every step's times to be recorded", lambda: len(recorded()) == steps, 120)
        tasks = sorted(({"name": t["name"], "start": ts(t["start_time"]), "end": ts(t["end_time"])} for t in recorded()), key=lambda t: t["start"])
        print(json.dumps({"tasks": tasks, "run_start": ts(flow_run["start_time"]), "run_end": ts(flow_run["end_time"]),
                          "created": ts(flow_run["created"]), "triggered": triggered}), flush=True)
finally:
    for p in reversed(procs):
        try:
            os.killpg(p.pid, 15)
            p.wait(30)
        except Exception:
            try:
                os.killpg(p.pid, 9)
            except Exception:
                pass
