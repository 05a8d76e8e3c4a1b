"""Settings, read from the environment (and an optional `.env` file).

The embedded default needs no service: SQLite and the in-memory channel
layer. `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and Redis.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# `make run` writes a `.env` with a generated SECRET_KEY on first start; tests
# point ENV_FILE elsewhere to run with a clean environment.
_env_file = Path(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))
if _env_file.is_file():
    env.read_env(str(_env_file))

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off. Set SECRET_KEY in the "
            "environment (or in .env; `make run` writes one), or set DEBUG=1 "
            "for local development."
        )
    # Development only: a fixed, obviously insecure key.
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
HOST = env.str("HOST", default="127.0.0.1")
PORT = env.int("PORT", default=8000)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "messaging",
    "realtime",
    "presence",
    "notifications",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads write at once (database_sync_to_async); IMMEDIATE
    # transactions and WAL avoid "database is locked" on lock upgrades.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Group membership expires unless refreshed; sessions refresh theirs every
# GROUP_EXPIRY / 3 seconds, so a member lost in a crash is gone within the hour.
GROUP_EXPIRY = env.int("GROUP_EXPIRY", default=3600)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # Well above the layer's 5 s blocking receive (see
                        # docs/architecture.md, "Redis connections").
                        "socket_timeout": 30,
                        "socket_connect_timeout": 5,
                        # redis-py's async pool refuses past this number
                        # instead of waiting; a burst of disconnects needs room.
                        "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=2000),
                    }
                ],
                "group_expiry": GROUP_EXPIRY,
                "capacity": env.int("CHANNEL_CAPACITY", default=1000),
                "expiry": 60,
                "prefix": env.str("CHANNEL_PREFIX", default="asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": GROUP_EXPIRY, "capacity": 1000},
        }
    }

# --- Celery ---------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_SERIALIZER = "json"

# --- Auth -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
OPEN_REGISTRATION = env.bool("OPEN_REGISTRATION", default=True)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("ACCESS_TOKEN_LIFETIME", default=900)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env.int("REFRESH_TOKEN_LIFETIME", default=86400 * 7)),
    "UPDATE_LAST_LOGIN": False,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "messaging.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.ScopedRateThrottle"],
    # Registration and token calls per client address.
    "DEFAULT_THROTTLE_RATES": {"auth": env.str("CHAT_AUTH_RATE", default="30/minute")},
    # Throttle by REMOTE_ADDR only: with NUM_PROXIES unset DRF trusts any
    # X-Forwarded-For, so a client could invent a new address per try. Behind
    # a proxy, uvicorn (proxy_headers, trusted hosts) already puts the real
    # client address in REMOTE_ADDR.
    "NUM_PROXIES": 0,
}

# The cache holds REST throttling counters; shared between processes on Redis.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

SPECTACULAR_SETTINGS = {
    "TITLE": "Realtime chat API",
    "DESCRIPTION": "REST side of the realtime chat backend; the WebSocket protocol is in docs/protocol.md.",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Realtime protocol ----------------------------------------------------
CHAT = {
    # Seconds between client pings; silence for twice this closes with 4408.
    "HEARTBEAT": env.int("CHAT_HEARTBEAT", default=25),
    # Seconds a dropped session can be resumed (announced in `welcome`).
    "RESUME_WINDOW": env.int("CHAT_RESUME_WINDOW", default=120),
    "MAX_FRAME_BYTES": 64 * 1024,
    "MAX_BODY_BYTES": 16 * 1024,
    "MAX_SUBSCRIPTIONS": env.int("CHAT_MAX_SUBSCRIPTIONS", default=500),
    # Live sessions one user may hold at once; one more is closed with 4429.
    "MAX_CONNECTIONS_PER_USER": env.int("CHAT_MAX_CONNECTIONS_PER_USER", default=20),
    # Seconds over which one session's `received` frames of one channel are
    # coalesced: the first moves the delivery cursor (and sends receipts) at
    # once, later ones within the interval move it once at its end, and on
    # close. 0: every `received` moves it at once.
    "ACK_INTERVAL": env.float("CHAT_ACK_INTERVAL", default=1.0),
    # Frames waiting for a slow client; overflowing it closes with 4409.
    "OUTBOUND_BUFFER": env.int("CHAT_OUTBOUND_BUFFER", default=1000),
    # Presence: a session not refreshed for this many seconds (its process
    # died) counts as gone; must exceed HEARTBEAT.
    "PRESENCE_TTL": env.int("CHAT_PRESENCE_TTL", default=60),
    # Seconds after the last session ends before the user shows offline.
    "PRESENCE_GRACE": env.float("CHAT_PRESENCE_GRACE", default=5.0),
    # Users one session may watch with presence.subscribe.
    "MAX_PRESENCE_WATCH": env.int("CHAT_MAX_PRESENCE_WATCH", default=5000),
    # Key prefix of session state in Redis.
    "STORE_PREFIX": env.str("CHAT_STORE_PREFIX", default="chat"),
    "SEND_RATE": env.float("CHAT_SEND_RATE", default=20.0),
    "SEND_BURST": env.int("CHAT_SEND_BURST", default=40),
    "TOPIC_AUTOCREATE": env.bool("CHAT_TOPIC_AUTOCREATE", default=True),
    # How long a `client_id` makes a send idempotent.
    "IDEMPOTENCY_WINDOW": env.int("CHAT_IDEMPOTENCY_WINDOW", default=86400),
    "HISTORY_DEFAULT_LIMIT": 50,
    "HISTORY_MAX_LIMIT": 200,
    # Browser origins allowed besides ALLOWED_HOSTS (a front end elsewhere),
    # e.g. "https://app.example.com"; hosts without scheme match any scheme.
    "ALLOWED_ORIGINS": env.list("CHAT_ALLOWED_ORIGINS", default=[]),
}

# --- i18n, static ---------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# The JavaScript client is served from its package's source, no copy kept:
# /static/rtc/client.js is clients/js/src/client.js. WhiteNoise serves what
# the finders find (also with DEBUG off), so no collectstatic is needed;
# `collectstatic` still works for a CDN or a proxy in front.
STATICFILES_DIRS = [("rtc", BASE_DIR / "clients" / "js" / "src")]
WHITENOISE_USE_FINDERS = True

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- History: edits, retention, archival ------------------------------------
HISTORY = {
    # Seconds after sending during which the author may edit; None: unlimited.
    "EDIT_WINDOW": env.int("CHAT_EDIT_WINDOW", default=None),
    # Days messages stay in the hot table (per topic: Channel.retention_days);
    # None keeps them forever.
    "RETENTION_DAYS": env.int("CHAT_RETENTION_DAYS", default=None),
    # Days archived messages are kept before they are purged; None: forever.
    "ARCHIVE_PURGE_DAYS": env.int("CHAT_ARCHIVE_PURGE_DAYS", default=None),
    # Rows moved per archival transaction.
    "ARCHIVE_BATCH": env.int("CHAT_ARCHIVE_BATCH", default=500),
    # Text search configuration of the tsvector column (fixed by migration 0003).
    "SEARCH_CONFIG": "english",
}

CELERY_BEAT_SCHEDULE = {
    "archive-messages": {"task": "messaging.tasks.archive_messages", "schedule": 3600.0},
}

# --- Notifications for offline users (docs/notifications.md) -----------------
# VAPID keys for Web Push (`manage.py vapid_keys` makes a pair). There is no
# default key in any mode: without both keys Web Push devices are refused
# (409) and never sent to; webhooks work regardless.
NOTIFICATIONS = {
    "VAPID_PUBLIC_KEY": env.str("VAPID_PUBLIC_KEY", default=""),
    "VAPID_PRIVATE_KEY": env.str("VAPID_PRIVATE_KEY", default=""),
    # The contact push services may use (mailto: or https:).
    "VAPID_SUBJECT": env.str("VAPID_SUBJECT", default="mailto:admin@localhost"),
    # Webhook and Web Push URLs may point at loopback, private or link-local
    # addresses, and may be plain http (else only with DEBUG).
    "WEBHOOK_ALLOW_PRIVATE": env.bool("WEBHOOK_ALLOW_PRIVATE", default=False),
    # "auto": the console backend when Celery runs eager (no broker: `make
    # run`), the real push backends otherwise; "console"; "push".
    "BACKEND": env.str("NOTIFY_BACKEND", default="auto"),
    # Seconds a notification waits so that more DMs from the same sender fold into it.
    "COALESCE_WINDOW": env.float("NOTIFY_COALESCE_WINDOW", default=5.0),
    # Tries per device before the delivery to it is marked failed.
    "MAX_ATTEMPTS": env.int("NOTIFY_MAX_ATTEMPTS", default=6),
    # Exponential backoff with full jitter: a random delay up to min(CAP, BASE * 2**n).
    "BACKOFF_BASE": env.float("NOTIFY_BACKOFF_BASE", default=2.0),
    "BACKOFF_CAP": env.float("NOTIFY_BACKOFF_CAP", default=300.0),
    # Seconds one push request may take.
    "HTTP_TIMEOUT": env.float("NOTIFY_HTTP_TIMEOUT", default=10.0),
    # Devices one user may register.
    "MAX_DEVICES": env.int("NOTIFY_MAX_DEVICES", default=20),
    # Celery queue of the notification tasks (empty: Celery's default queue);
    # a worker started with `-Q NAME` then serves them alone.
    "QUEUE": env.str("NOTIFY_QUEUE", default="") or None,
}
