"""kwok's controllers, one module each: Node, Pod, Lease, the generic Stage controller, where
Stages come from, and the stage player the three stage controllers share. Each takes a frozen,
validated ``Config``, its collaborators and callbacks; none imports another's state (the shard
wires them, :mod:`shardlet.shard`)."""
