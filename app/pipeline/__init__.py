"""Building, validating and promoting descriptor bundles (nightly refresh, CLI)."""
