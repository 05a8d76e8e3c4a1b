"""The JavaScript client's own tests (clients/js/test/, Node's test runner)
against a real server process on PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.e2e.servers import REPO_ROOT

from .conftest import Servers

pytestmark = pytest.mark.e2e

NODE = shutil.which("node")
USERS = 32  # enough for every test in clients/js/test/ to have its own


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.timeout(300)
def test_node_client_suite(servers: Servers) -> None:
    server = servers.start("node-suite")
    users = [{"id": u.id, "username": u.username, "token": u.token} for u in server.api.new_users(USERS, "js")]
    env = {**os.environ, "CHAT_TEST_URL": server.http_url, "CHAT_TEST_USERS": json.dumps(users)}
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
