"""rnnlab's version, recorded in every run's config.json (a module of its own, so recording it
does not import the package root and everything it exports)."""

__version__ = "0.1.0"
