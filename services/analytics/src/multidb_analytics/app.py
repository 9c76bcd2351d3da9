"""The analytics role's service: ``uvicorn multidb_analytics.app:app --port 8002``."""

from multidb.service import create_role_app

app = create_role_app("analytics")
