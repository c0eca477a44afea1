import os
import pathlib

out = pathlib.Path(os.environ.get("CONCURRENT_OUTPUT_DIR", "."))
out.mkdir(parents=True, exist_ok=True)
(out / "done.txt").write_text("ok\n")
