"""The kvmcloud controller."""
