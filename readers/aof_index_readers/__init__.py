"""aof_index_readers."""
