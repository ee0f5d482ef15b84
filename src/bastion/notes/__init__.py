"""The notes API."""
