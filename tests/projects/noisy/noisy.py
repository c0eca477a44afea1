import argparse, os, sys, time

from tqdm import tqdm

p = argparse.ArgumentParser()
p.add_argument("--updates", type=float, default=10000)
n = int(p.parse_args().updates)
print("starting", flush=True)
# mininterval=0: every update is drawn, as a chatty training loop does.
for _ in tqdm(range(n), mininterval=0, miniters=1, file=sys.stderr, ascii=True):
    pass
sys.stdout.write("x" * (5 * 1024 * 1024) + "\n")
sys.stdout.flush()
sys.stdout.buffer.write(b"bad bytes: \xff\xfe\xfd\n")
sys.stdout.flush()
# Stay a little, so that a heartbeat carries the bar's last state.
time.sleep(5)
out = os.environ["CONCURRENT_OUTPUT_DIR"]
with open(os.path.join(out, "noisy.txt"), "w") as f:
    f.write("done\n")
