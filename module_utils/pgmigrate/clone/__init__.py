"""The copy (phases 1 and 3-5 of the plan): assessment, extensions, schema, table data, keys and
indexes, sequences, large objects, resume state, progress, completion record."""
