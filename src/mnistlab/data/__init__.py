"""Datasets: in-memory splits and batching, synthetic digits, IDX files, downloads, the decoded
cache.
May import config, names, files and private; data and parts do not import each other."""
