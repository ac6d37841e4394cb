"""Talking to an OCI distribution registry: references, credentials, HTTP. No FUSE here."""
