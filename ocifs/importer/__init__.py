"""The `.import/` area: the only code that writes to a layout (see docs/durability.md)."""

from ocifs.importer.area import ImportDir, recover

__all__ = ["ImportDir", "recover"]
