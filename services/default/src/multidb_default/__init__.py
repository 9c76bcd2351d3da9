"""multidb role ``default``: the main application database (identities, media, OCR jobs)."""
