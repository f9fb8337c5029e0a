"""Which devices: the filter language, the shared SQL conditions (manageable, pushable, refused),
name resolution for bulk requests, and dialect-aware SQL helpers.

A floor below the command queue and the features: it reads the models of every feature and imports
no service, so every feature selects devices the same way.
"""
