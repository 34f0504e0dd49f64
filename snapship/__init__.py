"""snapship: agentless, snapshot-based replication of vCenter VMs into EBS snapshots."""

__version__ = "0.1.0"
