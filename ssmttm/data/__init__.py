"""The data half of the pipeline: fetch, licence audit, selection, segmenting, vocals, captions, manifest."""
