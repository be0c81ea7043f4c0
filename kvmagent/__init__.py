"""kvmcloud kvmagent."""
