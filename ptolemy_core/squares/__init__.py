"""squares."""
