"""Settings from the environment: the refusal without SECRET_KEY, the embedded defaults, Redis.

Each case runs Django in a subprocess with its own environment, since the
settings module is read once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
layer = settings.CHANNEL_LAYERS["default"]
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "layer": layer["BACKEND"],
    "hosts": layer["CONFIG"].get("hosts"),
    "debug": settings.DEBUG,
    "secret_key": settings.SECRET_KEY,
    "cache": settings.CACHES["default"]["BACKEND"],
}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the settings under test, and no `.env`."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"}}
    env.update({"ENV_FILE": "/nonexistent", "DJANGO_SETTINGS_MODULE": "config.settings", **extra})
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )


def settings_in(env: dict[str, str]) -> dict[str, Any]:
    result = run(["-c", PRINT_SETTINGS], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("debug", ["0", None])
def test_no_secret_key_without_debug_refuses_to_start(debug: str | None) -> None:
    env = clean_env(**({"DEBUG": debug} if debug is not None else {}))
    result = run(["-c", "import django; django.setup()"], env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_manage_check_refuses_without_secret_key() -> None:
    result = run(["manage.py", "check"], clean_env(DEBUG="0"))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_empty_secret_key_counts_as_unset() -> None:
    result = run(["-c", "import django; django.setup()"], clean_env(DEBUG="0", SECRET_KEY=""))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_without_secret_key_starts_with_development_key() -> None:
    values = settings_in(clean_env(DEBUG="1"))
    assert values["debug"] is True
    assert "insecure" in values["secret_key"]


def test_manage_check_passes_with_debug() -> None:
    result = run(["manage.py", "check"], clean_env(DEBUG="1"))
    assert result.returncode == 0, result.stderr


def test_secret_key_from_environment_is_used() -> None:
    values = settings_in(clean_env(DEBUG="0", SECRET_KEY="from-the-env-" + "x" * 40))
    assert values["secret_key"] == "from-the-env-" + "x" * 40
    assert values["debug"] is False


def test_secret_key_from_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "chat.env"
    env_file.write_text("SECRET_KEY=from-the-file-1234567890\n")
    values = settings_in(clean_env(DEBUG="0", ENV_FILE=str(env_file)))
    assert values["secret_key"] == "from-the-file-1234567890"


def test_embedded_defaults_without_services() -> None:
    values = settings_in(clean_env(DEBUG="1"))
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["layer"] == "channels.layers.InMemoryChannelLayer"
    assert values["cache"] == "django.core.cache.backends.locmem.LocMemCache"


def test_database_url_selects_postgresql() -> None:
    values = settings_in(clean_env(DEBUG="1", DATABASE_URL="postgres://postgres@127.0.0.1:5432/chat"))
    assert values["engine"] == "django.db.backends.postgresql"


def test_redis_url_selects_redis_layer_with_long_socket_timeout() -> None:
    values = settings_in(clean_env(DEBUG="1", REDIS_URL="redis://127.0.0.1:6379/9"))
    assert values["layer"] == "channels_redis.core.RedisChannelLayer"
    [host] = values["hosts"]
    assert host["address"] == "redis://127.0.0.1:6379/9"
    # Above the layer's 5 s blocking receive, else idle receives time out.
    assert host["socket_timeout"] > 5
    assert values["cache"] == "django.core.cache.backends.redis.RedisCache"


def test_serve_several_workers_needs_redis() -> None:
    result = run(["manage.py", "serve", "--workers", "2", "--port", "18765"], clean_env(DEBUG="1"), timeout=30)
    assert result.returncode != 0
    assert "CommandError" in result.stderr and "REDIS_URL" in result.stderr


def test_serve_command_error_in_process(settings: Any) -> None:
    from django.core.management import CommandError, call_command

    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL"):
        call_command("serve", "--workers", "3")
