"""Compatibility routes: the seed products' paths and shapes, as thin adapters over the native services."""
