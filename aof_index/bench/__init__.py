"""Benchmarks that print figures: ``aof-index bench ...``.

- :mod:`aof_index.bench.memory`: the chat stores under many concurrent conversations,
  next to LlamaIndex's own store for the same backend, with a check that no message was
  lost, duplicated or reordered.

Benchmarks measure and report; they never assert timings (DESIGN.md, Testing).
"""

from aof_index.bench.memory import (
    BenchConfig,
    BenchResult,
    PostgresTarget,
    StoreFigures,
    Verification,
    bench_store,
    make_message,
    parse_message,
    run_memory_bench,
    verify_conversations,
)

__all__ = [
    "BenchConfig",
    "BenchResult",
    "PostgresTarget",
    "StoreFigures",
    "Verification",
    "bench_store",
    "make_message",
    "parse_message",
    "run_memory_bench",
    "verify_conversations",
]
