"""Compute drivers: docker (real) and fake (for tests of the agent's logic)."""
