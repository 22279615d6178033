"""Example manifests shipped with the package; ``memory.yaml`` is the embedded default."""
