"""Conformance harness for model container images (docs/contract.md)."""

__version__ = "0.1.0"
