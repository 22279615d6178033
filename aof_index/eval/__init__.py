"""Retrieval evaluation (BEIR) used by the CLI and the benchmarks."""
