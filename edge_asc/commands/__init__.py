"""CLI commands. Each module: ``add_arguments(parser)`` and ``run(args) -> int``; stdlib-only at module level."""
