"""medauc: which image classifier is really best for a clinic, and how sure can we be."""

__version__ = "0.1.0"
