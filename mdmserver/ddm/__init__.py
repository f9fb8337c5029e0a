"""Declarative device management: declarations from blueprints, tokens, status reports."""
