"""The local control plane: toolchain build, PKI and the etcd/apiserver/controller processes."""

__all__ = ["DEFAULT_FEATURE_GATES"]

# ShardedListAndWatch (alpha in 1.36): shards ask for their slice of generic objects by uid range
DEFAULT_FEATURE_GATES = "ShardedListAndWatch=true"
