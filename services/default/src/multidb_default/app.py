"""The default role's service: ``uvicorn multidb_default.app:app --port 8001``."""

from multidb.service import create_role_app

app = create_role_app("default")
