"""The ``genloop`` command: parse arguments, call ``genloop.api``, print."""
