"""The face of the pipeline: the `lswh` command line and the one-machine dev runner."""
