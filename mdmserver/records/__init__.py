"""The device's records: the tables that describe a device and every fact the features select devices by.

``devices`` (the device and its inventory), ``admission`` (auth sets, preauthorizations), ``retirement``,
``push`` (push certificate, outbox, per-device push state), ``commands`` (the queue), ``groups``,
``users`` (owners) and ``attributes`` (custom attribute values). ``mdmserver.selection`` reads them all to
answer "which devices"; the feature services above both use ``selection``. Keeping these mappings in one
package below ``selection`` is what keeps the package graph acyclic with models counted: a feature that
held one of these tables would be imported by ``selection`` and import it back.

Each module here maps tables and imports nothing of ``mdmserver`` but ``mdmserver.db``. Who *writes* each
table is a service above (README, "Architecture"): a mapping here is not a writer.
"""
