"""Logical backups of every role: ``pg_dump -Fc`` on a schedule, verified, with restore drills.

- :mod:`~multidb.backups.policy`: the settings (directory, tools, each role's schedule and
  retention);
- :mod:`~multidb.backups.tools`: finding ``pg_dump``/``pg_restore`` that match the server,
  and running them without the password in their argv or environment;
- :mod:`~multidb.backups.store`: the backup folder (dumps and manifests, written atomically);
- :mod:`~multidb.backups.engine`: backup, verify, drill, restore and prune of one role;
- :mod:`~multidb.backups.manager`: the role service's side (schedule, one leader per role,
  operations started over HTTP, ``/backup/info``);
- :mod:`~multidb.backups.routes`: the role service's ``/backups`` routes;
- :mod:`~multidb.backups.command`: ``multidb backup``.
"""
