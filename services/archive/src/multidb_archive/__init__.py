"""multidb role ``archive``: archived users, people and media, kept out of the main database."""
