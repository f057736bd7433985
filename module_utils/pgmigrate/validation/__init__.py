"""Phase 6: proving the target equals the source, and the reports."""
