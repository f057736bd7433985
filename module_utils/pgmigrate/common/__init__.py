"""What every domain shares: connections and their errors, units, the catalog, the dependency planner,
the checks before anything changes, argument specs, the migration_* settings spec."""
