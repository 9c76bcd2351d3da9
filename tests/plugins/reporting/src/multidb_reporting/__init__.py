"""multidb role ``reporting``: a test-only fifth role."""
