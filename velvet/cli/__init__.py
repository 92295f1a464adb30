"""The ``velvet`` command line: LightningCLI subcommands plus data and model utilities."""
