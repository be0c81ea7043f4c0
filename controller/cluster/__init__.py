"""Several controller nodes on one database: membership, the hash ring, takeover, forwarding."""
