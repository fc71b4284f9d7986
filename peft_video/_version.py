"""Single source of the package version (written into every saved adapter_config.json)."""

__version__ = "0.1.0"
