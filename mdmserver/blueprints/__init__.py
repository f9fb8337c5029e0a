"""Blueprints: scoped bundles of profiles, apps and an OS-update target."""
