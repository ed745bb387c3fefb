"""The ``trtflow`` command line: one module per subcommand, option groups in ``options``."""
