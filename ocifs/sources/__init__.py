"""Image sources: one module per kind, all behind `ocifs.sources.base.Source`."""
