"""The ``aof-index`` command line (thin layer over the library)."""
