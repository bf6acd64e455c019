"""Reports: plots and tables built from the pipeline's logs and results."""
