"""aof_index_retrievers."""
