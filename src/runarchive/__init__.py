"""runarchive: crash-safe, verified snapshots of model run directories."""

__version__ = "0.1.0"
