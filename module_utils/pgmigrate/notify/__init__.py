"""Run summaries by email and webhook."""
