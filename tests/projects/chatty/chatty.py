import argparse, os, sys, time

p = argparse.ArgumentParser()
p.add_argument("--lines", type=float, default=200)
p.add_argument("--per-second", type=float, default=50)
p.add_argument("--big", type=float, default=0, help="MB of one line printed first")
a = p.parse_args()
if a.big:
    sys.stdout.write("b" * int(a.big * 1024 * 1024) + "\n")
for i in range(int(a.lines)):
    print(f"line {i}" + (" needle" if i % 100 == 7 else ""), flush=True)
    time.sleep(1 / a.per_second)
print("all lines written", flush=True)
with open(os.path.join(os.environ["CONCURRENT_OUTPUT_DIR"], "chatty.txt"), "w") as f:
    f.write("done\n")
