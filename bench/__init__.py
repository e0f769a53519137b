"""kwok and shardlet side by side on the same control plane: `python -m bench` (see bench/README.md)."""
