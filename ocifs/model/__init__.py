"""FUSE-free, I/O-free model of OCI content: digests, descriptors, documents."""
