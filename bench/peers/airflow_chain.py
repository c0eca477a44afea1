"""Airflow side of `make bench`: a DAG of N trivial Python tasks in sequence (the Windmill
benchmark's shape), run by `airflow standalone` (its recommended local setup: scheduler,
DAG processor, API server, LocalExecutor). Prints one JSON line per run, with the task instances'
own start and end times from Airflow's metadata database.

Usage: python airflow_chain.py <airflow_home> <steps> <reps>
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

home, steps, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(os.path.join(home, "dags"), exist_ok=True)
DAG = "bench_chain"
with open(os.path.join(home, "dags", f"{DAG}.py"), "w") as f:
    f.write(f'''
import datetime
from airflow.sdk import dag, task

@task
def step(i: int) -> int:
    return i

@dag(dag_id="{DAG}", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False, max_active_runs=1)
def chain():
    previous = None
    for i in range({steps}):
        t = step.override(task_id=f"step_{{i:03d}}")(i)
        if previous is not None:
            previous >> t
        previous = t

chain()
''')

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

env = dict(os.environ)
api_port = free_port()
env.update({
    "AIRFLOW_HOME": home,
    # Tasks report to the API server's execution API; it listens on a free port here.
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(home, "dags"),
    "AIRFLOW__API__PORT": str(api_port),
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
})
bin_dir = os.path.dirname(sys.executable)
airflow = os.path.join(bin_dir, "airflow")
# standalone starts its components as `airflow <command>` from PATH.
env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
log = open(os.path.join(home, "standalone.log"), "w")
server = subprocess.Popen([airflow, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

def db():
    return sqlite3.connect(os.path.join(home, "airflow.db"), timeout=30)

def wait(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except sqlite3.Error:
            pass
        if server.poll() is not None:
            sys.exit(f"airflow standalone exited ({server.returncode}); see {home}/standalone.log")
        time.sleep(0.5)
    sys.exit(f"airflow: {what} did not happen within {timeout} s; see {home}/standalone.log")

def parse_ts(s):
    # SQLite stores timezone-aware datetimes as text, e.g. 2026-11-26 08:20:01.123456+00:00
    from datetime import datetime
    return datetime.fromisoformat(s).timestamp()

try:
    wait("parsing the DAG", lambda: db().execute("select count(*) from dag where dag_id = ?", (DAG,)).fetchone()[0] == 1, 600)
    subprocess.run([airflow, "dags", "unpause", DAG], env=env, check=True, capture_output=True)
    for rep in range(reps):
        run_id = f"bench_{rep}_{int(time.time())}"
        triggered = time.time()
        subprocess.run([airflow, "dags", "trigger", DAG, "--run-id", run_id], env=env, check=True, capture_output=True)
        state = lambda: db().execute("select state from dag_run where dag_id = ? and run_id = ?", (DAG, run_id)).fetchone()
        wait("the run to end", lambda: (state() or [None])[0] in ("success", "failed"), 3600)
        if state()[0] != "success":
            sys.exit(f"airflow run {run_id} ended {state()[0]}; see {home}/standalone.log")
        rows = db().execute(
            "select task_id, start_date, end_date from task_instance where dag_id = ? and run_id = ? order by task_id",
            (DAG, run_id)).fetchall()
        run = db().execute("select start_date, end_date from dag_run where dag_id = ? and run_id = ?", (DAG, run_id)).fetchone()
        tasks = [{"start": parse_ts(s), "end": parse_ts(e)} for (_, s, e) in rows]
        print(json.dumps({"tasks": tasks, "run_start": parse_ts(run[0]), "run_end": parse_ts(run[1]), "triggered": triggered}), flush=True)
finally:
    os.killpg(server.pid, 15)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
