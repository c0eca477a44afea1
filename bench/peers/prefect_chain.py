"""Prefect side of `make bench`: a flow of N trivial tasks in sequence (the Windmill benchmark's
shape), deployed to a process work pool and run by a worker against a local Prefect server
(Prefect's recommended local setup). Prints one JSON line per run, with the task runs' own
start and end times from Prefect's API.

Usage: python prefect_chain.py <prefect_home> <steps> <reps>
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

home, steps, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
''')

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

port = free_port()
api = f"http://127.0.0.1:{port}/api"
env = dict(os.environ)
env.update({"PREFECT_HOME": home, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false"})
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
              "flow.from_source(source='.', entrypoint='bench_chain.py:chain')"
              ".deploy(name='bench', work_pool_name='bench-pool')\n")
    subprocess.run([sys.executable, "-c", deploy], env=env, cwd=home, check=True, capture_output=True)
    start(["worker", "start", "--pool", "bench-pool", "--type", "process"], "worker")
    deployment = call("GET", "/deployments/name/bench-chain/bench")
    for rep in range(reps):
        triggered = time.time()
        run = call("POST", f"/deployments/{deployment['id']}/create_flow_run", {})
        state = lambda: call("GET", f"/flow_runs/{run['id']}")["state"]["type"]
        wait("the flow run to end", lambda: state() in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), 1800)
        if state() != "COMPLETED":
            sys.exit(f"prefect flow run ended {state()}; see {home}/worker.log")
        flow_run = call("GET", f"/flow_runs/{run['id']}")
        tasks = call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200})
        tasks = sorted(({"name": t["name"], "start": ts(t["start_time"]), "end": ts(t["end_time"])} for t in tasks), key=lambda t: t["name"])
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
