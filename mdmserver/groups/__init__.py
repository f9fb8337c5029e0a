"""Device groups: nested, static (explicit members) or smart (a device filter)."""
