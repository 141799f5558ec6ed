"""The one error a config raises."""


class ConfigError(ValueError):
    """A config file or override that does not describe a valid config."""
