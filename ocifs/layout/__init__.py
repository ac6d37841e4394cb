"""Changes to a layout directory other than imports: create, untag, retag, delete, collect.

FUSE-free and blocking (call from a worker thread or the CLI). Every change of
index.json goes through `ocifs.importer.indexjson.rewrite` (layout lock,
re-read, temp + fsync + rename), so removals keep the import promises.
"""
