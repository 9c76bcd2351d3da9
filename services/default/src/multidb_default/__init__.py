"""multidb role default."""
