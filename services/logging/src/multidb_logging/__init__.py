"""multidb role logging."""
