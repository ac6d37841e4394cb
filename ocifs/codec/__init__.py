"""Turn a blob (compressed or not) into bytes at an offset, fast.

Below both `sources/` (compressed archives) and `layers/` (layer blobs): the
one-pass decoder (`decode`), gzip seek points (`seekable`), readers of
decompressed copies (`readers`, `zstd_stream`), the limits a pass obeys and
the `BlobReader` interface everything reads through (`blobio`). It imports
nothing from `sources/`, `layers/`, `tree/` or FUSE.
"""
