import hashlib, os

key = os.environ["API_KEY"]
print(f"the key is {key}", flush=True)
print(f"greeting: {os.environ['GREETING']}", flush=True)
with open(os.path.join(os.environ["CONCURRENT_OUTPUT_DIR"], "key.sha256"), "w") as f:
    f.write(hashlib.sha256(key.encode()).hexdigest())
