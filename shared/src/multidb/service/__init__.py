"""The role service: one small Litestar app per database role."""

from multidb.service.app import create_role_app

__all__ = ["create_role_app"]
