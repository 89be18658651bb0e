"""Child process of tests/servers.py's authenticating LocalMongoServer: mongoeco with SCRAM users.

Users come from $WA_EXPORT_TEST_MONGO_USERS as JSON [[name, password], ...].
"""

from __future__ import annotations

import json
import os

from mongoeco.wire.auth import WireAuthUser

from servers import MONGO_USERS_ENV  # this script's folder (tests/) is on sys.path
from wa_export.demo.mongo_server import main

if __name__ == "__main__":
    users = json.loads(os.environ.pop(MONGO_USERS_ENV, "[]"))
    # mongoeco's SCRAM-SHA-1 lacks MongoDB's MD5 password digest, so pymongo
    # cannot use it: offer SCRAM-SHA-256 only (see LocalMongoServer.uri_for).
    main(
        tuple(
            WireAuthUser(username=str(name), password=str(password), source="admin", mechanisms=("SCRAM-SHA-256",))
            for name, password in users
        )
    )
