"""Helpers shared by the pipeline's steps: where Concurrent puts inputs and wants outputs."""
import os
import pathlib


def input_dir(name: str) -> pathlib.Path:
    """Files of input `name` (one sub-directory per input of the node)."""
    return pathlib.Path(os.environ.get("CONCURRENT_INPUT_DIR", "inputs")) / name


def output_dir() -> pathlib.Path:
    """Everything written here is uploaded as the step's outputs."""
    out = pathlib.Path(os.environ.get("CONCURRENT_OUTPUT_DIR", "outputs"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def partition() -> str:
    return f"{os.environ.get('CONCURRENT_PARTITION_INDEX', '0')}/{os.environ.get('CONCURRENT_PARTITION_COUNT', '1')}"


def read_csv(path: pathlib.Path) -> list[dict]:
    lines = path.read_text().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]
