"""Backups with pg_dump, their verification, retention, restore, and the target's rollback point."""
