"""Device owners: a small users resource and the device → owner assignment (Ivanti's updateAccount)."""
