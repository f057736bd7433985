"""Everything that knows the application (the CDP): its security and performance checks, post-migration checks."""
