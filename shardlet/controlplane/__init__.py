"""The local control plane: toolchain build, PKI and the etcd/apiserver/controller processes."""
