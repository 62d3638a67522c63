"""One run, built and recorded: build, train (TensorBoard, metrics.json), checkpoints, resume,
folder.
May import loop, parts, data, config, names, files and private; never sweep or report."""
