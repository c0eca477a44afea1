"""Prints a line and half of another, then waits (as a step between two phases of work does)
until the file named by --release exists; then a warning on stderr and the rest on stdout."""
import argparse
import os
import sys
import time

args = argparse.ArgumentParser()
args.add_argument("--release", required=True)
release = args.parse_args().release
print("starting", flush=True)
sys.stdout.write("phase one ")
sys.stdout.flush()
deadline = time.time() + 300
while not os.path.exists(release):
    if time.time() > deadline:
        sys.exit("held_step: never released")
    time.sleep(0.1)
sys.stderr.write("a warning\n")
sys.stderr.flush()
time.sleep(0.5)
print("phase two", flush=True)
