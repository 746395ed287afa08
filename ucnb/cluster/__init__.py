"""The cluster lanes' layers: KV client, control plane, faults, operation histories, shared steps."""
