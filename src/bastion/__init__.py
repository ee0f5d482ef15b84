"""bastion: a secure-by-default API service and toolkit on FastAPI."""

__version__ = "0.1.0"
