"""Mender's v1 admission management API, on top of the admission core (auth sets, preauthorizations)."""
