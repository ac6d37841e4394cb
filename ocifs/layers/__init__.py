"""Layer tars: indexing, random access into compressed layers, caching, merging.

FUSE-free. `store.LayerStore` is the entry point used by the tree; `entry`
holds the data types it returns; `merge` applies OCI whiteouts to build a rootfs.
"""
