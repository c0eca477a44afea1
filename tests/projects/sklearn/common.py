from sklearn.datasets import load_iris

# Three parts of the iris features, each written in another format.
PARTS = [("part-0.csv", 0, 50), ("part-1.json", 50, 100), ("part-2.parquet", 100, 150)]


def features():
    return load_iris(as_frame=True).data
