"""Monitoring: metric names, Prometheus and Alertmanager configuration, alert rules.

Pure code on the floor beside images/ and scheduler/: the agent (compute/) and the
server (api/) both import it; it imports neither. README.md holds the metric names
every exporter and every rule agrees on.
"""
