"""kvmcloud storageagent."""
