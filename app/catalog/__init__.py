"""The card catalogue: Scryfall records kept in PostgreSQL (or SQLite on a bare machine)."""
