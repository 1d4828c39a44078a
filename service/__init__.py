"""convscope's service. Importing this package creates no app, no session and no settings."""

__version__ = "0.1.0"
