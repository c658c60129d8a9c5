"""collector_line."""
