"""mdmserver: a self-hosted MDM server for Apple devices."""

__version__ = "0.1.0"
