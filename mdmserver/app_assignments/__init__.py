"""Apps assigned to devices and groups, and where each assigned app stands on each device."""
