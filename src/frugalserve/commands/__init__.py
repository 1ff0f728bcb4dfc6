"""One module per ``frugalserve`` subcommand: ``configure(parser)`` and ``run(args) -> int``."""
