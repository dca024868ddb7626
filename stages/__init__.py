"""Cats vs. dogs with small data: the DVC pipeline's stages and their shared modules."""
