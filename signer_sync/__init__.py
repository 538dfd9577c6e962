"""signer-sync: a complete, current and permanent inventory of AWS Signer signing jobs."""

__version__ = "0.1.0"
