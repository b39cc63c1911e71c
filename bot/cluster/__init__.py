"""Ray: the queue's runners on the GPUs of other hosts (optional: ``pip install -e ".[ray]"``).

:mod:`.node` runs on the cluster's nodes; :mod:`.runners` and :mod:`.pool` in the bot. Nothing
here is imported unless ``LORABOT_RAY_ADDRESS`` is set (or ``check`` asks about the cluster).
"""
