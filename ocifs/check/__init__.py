"""`ocifs check`: verify a local image source end to end (docs/check.md)."""
