"""Command history: per device and across devices, with filters, the latest command per device, cancel."""
