import os, time

for i in range(6):
    print(f"quiet step, second {i}", flush=True)
    time.sleep(1)
with open(os.path.join(os.environ["CONCURRENT_OUTPUT_DIR"], "quiet.txt"), "w") as f:
    f.write("done\n")
