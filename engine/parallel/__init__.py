"""Tensor parallelism: the rank's process group (`TPGroup`) and how weights split (`TPShard`)."""
