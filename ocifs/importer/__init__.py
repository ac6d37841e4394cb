"""The `.import/` area: the only code that writes to a layout (see docs/durability.md)."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocifs.importer.area import ImportDir, recover

__all__ = ["ImportDir", "recover"]


def __getattr__(name: str) -> Any:
    # On first use, not at import: `ocifs.importer.commit` or `.indexjson` (used by
    # `ocifs gc` and the tree's edits) must not load the whole writer.
    if name in __all__:
        from ocifs.importer import area

        return getattr(area, name)
    raise AttributeError(f"module 'ocifs.importer' has no attribute {name!r}")
