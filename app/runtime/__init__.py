"""Process-level machinery: logging, the model holder, locks, start-up and background work."""
