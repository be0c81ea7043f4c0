"""The cephagent's plugins: cluster and pools, volumes, snapshots, images."""
