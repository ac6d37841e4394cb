"""The virtual tree: inodes, names and attributes, pure Python (no pyfuse3)."""
