"""The zero-downtime path: logical replication from the source, cutover, cleanup."""
