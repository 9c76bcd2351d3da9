"""The logging role's service: ``uvicorn multidb_logging.app:app --port 8003``."""

from multidb.service import create_role_app

app = create_role_app("logging")
