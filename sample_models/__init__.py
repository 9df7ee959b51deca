"""Sample model images: one conformant model and its deliberately broken variants."""
