"""Accounts, sessions and tokens: the identity provider."""
