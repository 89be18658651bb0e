"""Child process of tests/servers.py's authenticating LocalMongoServer: mongoeco with SCRAM users.

Users come from $WA_EXPORT_TEST_MONGO_USERS as JSON [[name, password], ...].
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from mongoeco.wire.auth import WireAuthUser

from wa_export.demo.mongo_server import serve_mongo

MONGO_USERS_ENV = "WA_EXPORT_TEST_MONGO_USERS"


def main() -> int:
    parser = argparse.ArgumentParser(prog="auth_mongo_child.py")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    users = json.loads(os.environ.pop(MONGO_USERS_ENV, "[]"))
    # mongoeco's SCRAM-SHA-1 lacks MongoDB's MD5 password digest, so pymongo
    # cannot use it: offer SCRAM-SHA-256 only (see LocalMongoServer.uri_for).
    auth_users = tuple(
        WireAuthUser(username=str(name), password=str(password), source="admin", mechanisms=("SCRAM-SHA-256",))
        for name, password in users
    )
    asyncio.run(serve_mongo(args.port, args.data, auth_users))
    return 0


if __name__ == "__main__":
    sys.exit(main())
