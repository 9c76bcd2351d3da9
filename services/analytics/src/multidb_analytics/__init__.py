"""multidb role ``analytics``: analytics and reporting data."""
