"""Ingestion of documents into a Memory and the record of what was ingested."""
