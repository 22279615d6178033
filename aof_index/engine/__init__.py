"""Query and chat engines over a Memory, and metadata filter conversion."""
