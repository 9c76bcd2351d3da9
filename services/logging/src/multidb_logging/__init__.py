"""multidb role ``logging``: application, error and access logs."""
