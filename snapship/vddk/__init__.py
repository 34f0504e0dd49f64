"""Disk data through VMware's VDDK (libvixDiskLib 7.0.3).

The worker side (`reader.DiskReader`, `process`) never loads the library; the reader process
(`server`, `binding`) does. Nothing is imported here, so starting a reader process loads only
what it needs (no ssl, boto3 or pyvmomi next to VDDK's own OpenSSL).
"""
