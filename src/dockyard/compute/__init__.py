"""The host agent: reconcile loop, compute driver interface and drivers."""
