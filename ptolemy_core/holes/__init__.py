"""holes."""
