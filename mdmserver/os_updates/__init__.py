"""Software updates through MDM commands: viability, progress checks and the fleet view."""
