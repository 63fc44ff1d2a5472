"""The ``flowkit`` command line."""
