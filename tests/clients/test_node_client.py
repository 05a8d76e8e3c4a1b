"""The JavaScript client's own tests (clients/js/test/, Node's test runner)
against a real server process on PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import psycopg
import pytest

from tests.e2e.servers import REPO_ROOT

from .conftest import Servers

pytestmark = pytest.mark.e2e

NODE = shutil.which("node")
USERS = 40  # enough for every test in clients/js/test/ to have its own


@pytest.mark.skipif(NODE is None and not os.environ.get("CI"), reason="node is not installed (in CI: a failure)")
@pytest.mark.timeout(300)
def test_node_client_suite(servers: Servers, services_env: dict[str, str]) -> None:
    # A low send rate, so that the client's retry after `rate_limited` is met for sure.
    server = servers.start("node-suite", CHAT_SEND_RATE="5", CHAT_SEND_BURST="10")
    made = server.api.new_users(USERS + 1, "js")
    users = [{"id": u.id, "username": u.username, "token": u.token} for u in made]
    inactive = users.pop()
    # Banned after its token was issued: its connections are closed with 4403.
    with psycopg.connect(services_env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)) as db:
        db.execute("UPDATE auth_user SET is_active = false WHERE id = %s", (inactive["id"],))
    env = {
        **os.environ,
        "CHAT_TEST_URL": server.http_url,
        "CHAT_TEST_USERS": json.dumps(users),
        "CHAT_TEST_INACTIVE": json.dumps(inactive),
    }
    done = subprocess.run(
        [NODE, "--experimental-websocket", "--test", "--test-reporter=spec", "clients/js/test/"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The runner found and ran the tests (an empty run also exits 0).
    passed = re.search(r"^\S* ?pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 10, output
    assert re.search(r"^\S* ?fail 0$", output, re.MULTILINE), output
