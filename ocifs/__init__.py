"""ocifs: mount OCI image layouts and image archives as browsable filesystems."""

__version__ = "0.1.0"
