"""multidb gateway: the public /database API, fanning out to the role services."""
