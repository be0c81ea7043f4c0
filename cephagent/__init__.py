"""kvmcloud cephagent."""
