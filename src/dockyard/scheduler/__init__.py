"""Placement: filter hosts, weigh the survivors, pick one. Pure functions."""
