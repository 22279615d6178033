"""The SRE runbooks ingested by ``aof-index demo`` (package data in ``corpus/``)."""
