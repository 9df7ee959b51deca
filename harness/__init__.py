"""Conformance harness for model container images (see SPEC.md)."""

__version__ = "0.1.0"
