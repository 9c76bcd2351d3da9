from multidb.migrations import run_env

run_env("archive")
