"""The ``divconq`` command line and the local-process helpers it shares with tests."""
