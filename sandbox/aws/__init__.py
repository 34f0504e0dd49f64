"""Local AWS for snapship's sandbox: EBS direct APIs with AWS's semantics, EC2 et al. from moto.

One HTTP endpoint that boto3 reaches unchanged through ``endpoint_url``. Requests signed for the
``ebs`` service are answered by :mod:`sandbox.aws.snapshots` (block data on disk, deduplicated);
everything else goes to moto's server application. Snapshots started through EBS direct APIs are
mirrored into moto's EC2 backend under the same id so DescribeSnapshots, CreateTags,
DeleteSnapshot, CreateVolume and RegisterImage see them.

Entry points: :func:`sandbox.aws.server.main` (CLI, ``python -m sandbox.aws``) and
:func:`sandbox.aws.testing.start_local_aws` (in-process, for tests and benchmarks).
"""
