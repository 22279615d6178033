"""Node parsers (chunkers) sized to the embedding model's window."""
