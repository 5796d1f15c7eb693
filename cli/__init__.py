"""Headless subcommands: the contract that tests and users script against."""
