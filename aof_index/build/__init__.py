"""Manifest → components: the registry factories and the Memory builder."""
