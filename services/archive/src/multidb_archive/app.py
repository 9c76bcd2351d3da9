"""The archive role's service: ``uvicorn multidb_archive.app:app --port 8004``."""

from multidb.service import create_role_app

app = create_role_app("archive")
