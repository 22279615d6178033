"""aof_index."""
