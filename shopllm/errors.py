"""Errors a user can act on: the command line prints them as one line on stderr and exits non-zero."""


class ShopllmError(Exception):
    """Bad configuration, missing input or an unwritable output: stops the run with one clear line."""


class InputError(ShopllmError):
    """An input path or glob that matches nothing, or a file that cannot be read."""


class ConfigError(ShopllmError):
    """A config file or flag that is not valid."""
