"""multidb role archive."""
