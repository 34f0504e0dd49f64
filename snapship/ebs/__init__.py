"""EBS side of snapship: clients, the snapshot writer, reader, groups, retention and launch.

- `client`: boto3 clients from explicit settings, error classification.
- `writer`: StartSnapshot / PutSnapshotBlock (bounded concurrency, checkpoints) / Complete.
- `reader`: rebuild a volume from a snapshot with checksum verification.
- `groups`: tag schema of a snapshot group, listing and deleting groups.
- `retention`: which groups to keep.
- `launch`: volumes, image and instance from a complete group.
"""
