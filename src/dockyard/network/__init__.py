"""Networks: IPAM and hostname rules (control plane), plumbing and tc (agent)."""
