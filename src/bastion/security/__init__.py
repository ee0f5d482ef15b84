"""Security primitives: pure functions and small classes, no FastAPI, no I/O."""
