"""pytest adapter of the conformance harness."""
