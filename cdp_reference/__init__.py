"""CDP reference database: schema and deterministic data generator (see generate.py)."""
