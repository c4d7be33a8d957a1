"""Moving instances between hosts: the cold migration's state machine (pure)."""
