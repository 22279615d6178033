"""node_parsers."""
