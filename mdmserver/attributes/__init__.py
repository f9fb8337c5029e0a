"""Custom attributes on devices, with Ivanti's replace / merge / delete semantics."""
