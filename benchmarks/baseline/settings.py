"""The baseline: the Channels tutorial chat, as the tutorial writes it.

A separate, minimal Django project (no database, no auth, no persistence):
one `AsyncWebsocketConsumer` per connection, `group_add` on connect,
`group_send` to `chat_<room>` on every frame received, on the channels-redis
core layer. Served by daphne. Only the benchmark runs it
(`benchmarks/run.py`), so that every figure of ours comes with the
tutorial's, measured in the same run.
"""

import os

SECRET_KEY = os.environ.get("BASELINE_SECRET_KEY", "baseline-benchmark-only-not-a-real-site")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["daphne", "channels"]
ROOT_URLCONF = "benchmarks.baseline.urls"
ASGI_APPLICATION = "benchmarks.baseline.asgi.application"
DATABASES: dict = {}
USE_TZ = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/12")],
            "prefix": os.environ.get("BASELINE_CHANNEL_PREFIX", "baseline"),
        },
    },
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
