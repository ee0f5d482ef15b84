"""Scanners against the real server: schemathesis in ``make test``, and ``make scan``'s deep
schemathesis runs (SQLite and PostgreSQL) and sqlmap."""
