"""VM high availability: hosts declared dead, storage fencing, VMs restarted elsewhere.

:mod:`policy` holds the decisions (pure functions), :mod:`fencing` the narrow
interface storage fencing plugs into, :mod:`restart` the jobs that act on a
dead host. The tracker (:mod:`controller.tracker`) declares a host dead and
destroys the stale copy of a VM on a host that comes back.
"""
