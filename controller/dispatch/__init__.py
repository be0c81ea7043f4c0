"""Sending commands to agents: the transport seam and the dispatcher."""
