"""The ``dockyard`` command: a client of the REST API, plus ``dockyard up``."""
