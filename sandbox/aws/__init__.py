"""Local AWS for snapship's sandbox: EBS direct APIs with AWS's semantics, EC2 et al. from moto.

One HTTP endpoint that boto3 reaches unchanged through ``endpoint_url``. Requests signed for the
``ebs`` service are answered by :mod:`sandbox.aws.snapshots` (block data on disk, deduplicated);
everything else goes to moto's server application. Snapshots started through EBS direct APIs are
mirrored into moto's EC2 backend under the same id so DescribeSnapshots, CreateTags,
DeleteSnapshot, CreateVolume and RegisterImage see them.

Entry points: :func:`sandbox.aws.server.main` (CLI, ``python -m sandbox.aws``) and
:func:`sandbox.aws.testing.start_local_aws` (in-process, for tests and benchmarks).

Decisions where AWS's documentation is silent (kept in one place so callers know what to expect):

- Writes to a snapshot that is sealing, completed or in error, and reads (List*/Get) of one that
  is not completed: ValidationException, Reason INVALID_SNAPSHOT_ID, message naming the state.
- Bad DataLength, checksum mismatch, wrong algorithm, short body ("Failed to read block data"),
  CompleteSnapshot count or LINEAR mismatch: ValidationException INVALID_PARAMETER_VALUE.
  CompleteSnapshot rejects synchronously; the snapshot stays pending and can be completed again.
- A block index beyond VolumeSize: INVALID_BLOCK. Two concurrent PUTs of one index:
  the later one gets CONFLICTING_BLOCK_UPDATE. Re-PUT after the first finished overwrites.
- The parent must be completed; a snapshot moto created itself (EC2 CreateSnapshot) reads as
  an empty completed snapshot and can be a parent.
- "Changed" in ListChangedBlocks means written in between (lineage), not different bytes: a
  block rewritten with equal data is listed. Snapshots of different lineages (no common root
  through ParentSnapshotId): UNRELATED_SNAPSHOTS. Block tokens belong to the written block, so a
  parent's token stays valid for an inherited block in the child.
- Pending-snapshot quota (100): ConcurrentLimitExceededException by default (the only
  "concurrent" error of StartSnapshot); ServiceQuotaExceededException selectable. A sealing
  snapshot still counts (it is still pending); an idempotent ClientToken replay is not refused.
- ClientToken: at most 64 ASCII characters (EC2 idempotency rules); forgotten when its snapshot
  is deleted. Default MaxResults: 10,000 (the documented maximum).
- Deleting through EC2 is seen at once by EBS calls; block files nothing references any more
  are removed by a sweep (every second, and on ``GET /_sandbox/stats``).
- moto's backends are process-wide: two endpoints in one process share EC2 state.
"""
