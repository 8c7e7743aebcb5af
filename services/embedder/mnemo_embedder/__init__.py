"""The embedder service: reads `embed` and `embed_query`, writes vectors."""
