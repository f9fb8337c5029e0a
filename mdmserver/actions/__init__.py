"""Remote actions in ManageEngine's vocabulary, per device and in bulk, with Ivanti's viability check."""
