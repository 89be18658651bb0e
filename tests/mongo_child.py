"""Child process of tests/servers.py's LocalMongoServer with users or a data file: mongoeco with SCRAM users
and/or a SQLite file (`--data`), which the demo's server never needs.

Users come from $WA_EXPORT_TEST_MONGO_USERS as JSON [[name, password], ...].
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.auth import WireAuthUser

from servers import MONGO_USERS_ENV  # this script's folder (tests/) is on sys.path
from wa_export.demo.servers import serve_mongo

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, default=None, help="SQLite file (persistent)")
    args = parser.parse_args()
    users = json.loads(os.environ.pop(MONGO_USERS_ENV, "[]"))
    # mongoeco's SCRAM-SHA-1 lacks MongoDB's MD5 password digest, so pymongo
    # cannot use it: offer SCRAM-SHA-256 only (see LocalMongoServer.uri_for).
    auth_users = tuple(
        WireAuthUser(username=str(name), password=str(password), source="admin", mechanisms=("SCRAM-SHA-256",))
        for name, password in users
    )
    engine = SQLiteEngine(str(args.data)) if args.data is not None else None
    asyncio.run(serve_mongo(args.port, engine=engine, auth_users=auth_users))
