"""snapship's vSphere client: session, inventory, eligibility, CBT, snapshots, privileges, location.

Production code for real vCenter 6.7/7.0/8.0 through pyvmomi; every function takes its session and
object ids explicitly. Import submodules directly (``snapship.vsphere.cbt`` ...); this package
re-exports the names most callers need.
"""

from snapship.vsphere.eligibility import EligibilityResult, check_eligibility
from snapship.vsphere.facts import DiskFacts, Inventory, NicFacts, VmFacts
from snapship.vsphere.session import VcenterSession

__all__ = [
    "DiskFacts",
    "EligibilityResult",
    "Inventory",
    "NicFacts",
    "VcenterSession",
    "VmFacts",
    "check_eligibility",
]
