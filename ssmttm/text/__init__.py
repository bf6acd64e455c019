"""Caption embeddings: the frozen T5 text encoder, the text-embed stage and the text store reader."""
