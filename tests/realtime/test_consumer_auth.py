"""The session actor's connection life: greeting, tokens, Origin, heartbeat, bans."""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import RefreshToken

from tests.conftest import token_for, ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


# --- connect ---------------------------------------------------------------------


async def test_welcome_fields(auser):
    ann = await auser("ann")
    async with ws_session(ann) as s:
        w = s.welcome
        assert w["session"].startswith("s_") and len(w["session"]) > 2
        assert w["user"] == {"id": ann.pk, "username": "ann"}
        assert w["heartbeat"] == 25
        assert w["resume_window"] == 120
        assert w["resumed"] is False
        assert w["channels"] == []
        assert await s.nothing()


async def test_each_connection_gets_its_own_session_id(auser):
    ann = await auser()
    async with ws_session(ann) as a, ws_session(ann) as b:
        assert a.welcome["session"] != b.welcome["session"]


@pytest.mark.parametrize(
    "token",
    [None, "garbage", "a.b.c"],
    ids=["missing", "garbage", "malformed-jwt"],
)
async def test_bad_or_missing_token_is_accepted_then_closed_4401(token):
    async with ws_session(token=token, expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_expired_token_closes_4401(auser):
    ann = await auser()
    async with ws_session(token=token_for(ann, lifetime=-30), expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_refresh_token_is_not_an_access_token(auser):
    ann = await auser()
    refresh = await sync_to_async(lambda: str(RefreshToken.for_user(ann)))()
    async with ws_session(token=refresh, expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_token_of_deleted_user_closes_4401(auser):
    ann = await auser()
    token = token_for(ann)
    await sync_to_async(ann.delete)()
    async with ws_session(token=token, expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_token_whose_user_id_is_not_a_number_closes_4401():
    """A signed token (not one of ours) naming no user id: refused without a lookup."""
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken()
    token["user_id"] = "not-a-number"
    async with ws_session(token=str(token), expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_refused_user_leaves_the_groups_joined_before_the_lookup(auser):
    """The actor joins its groups before loading the user; a refusal leaves them."""
    from messaging.fanout import fanout_hub

    banned = await auser(is_active=False)
    async with ws_session(banned, expect_welcome=False) as s:
        assert await s.closed() == 4403
        assert f"user.{banned.pk}" not in fanout_hub().groups


async def test_inactive_user_closes_4403(auser):
    banned = await auser(is_active=False)
    async with ws_session(banned, expect_welcome=False) as s:
        assert await s.closed() == 4403


async def test_a_user_deactivated_or_deleted_after_a_connect_is_refused_at_the_next(auser):
    """The user check is read from the database at every connect (no cache):
    a bulk update, which sends no signal, counts at once too."""
    from django.contrib.auth import get_user_model

    ann, bob = await auser(), await auser()
    async with ws_session(ann), ws_session(bob):
        pass
    await sync_to_async(get_user_model().objects.filter(pk=ann.pk).update)(is_active=False)
    async with ws_session(ann, expect_welcome=False) as s:
        assert await s.closed() == 4403
    token = token_for(bob)
    await sync_to_async(bob.delete)()
    async with ws_session(token=token, expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_connects_at_once_are_each_answered_for_their_own_user(auser):
    """Concurrent connects share one database call; each still gets its own
    verdict: welcome, 4403 (inactive), 4401 (deleted)."""
    ok, banned, gone = await auser(), await auser(is_active=False), await auser()
    gone_token = token_for(gone)
    await sync_to_async(gone.delete)()

    async def outcome(token):
        async with ws_session(token=token, expect_welcome=False) as s:
            out = await s.comm.receive_output(5)
            return json.loads(out["text"])["user"]["id"] if out["type"] == "websocket.send" else out["code"]

    results = await asyncio.gather(outcome(token_for(ok)), outcome(token_for(banned)), outcome(gone_token))
    assert results == [ok.pk, 4403, 4401]


async def test_bearer_header_token(auser):
    ann = await auser()
    headers = [(b"authorization", b"Bearer " + token_for(ann).encode())]
    async with ws_session(headers=headers) as s:
        assert s.welcome["user"]["id"] == ann.pk
        assert (await s.request({"type": "ping"}))["type"] == "pong"


async def test_bearer_header_with_bad_token_closes_4401():
    async with ws_session(headers=[(b"authorization", b"Bearer nope")], expect_welcome=False) as s:
        assert await s.closed() == 4401


async def test_allowed_origin_is_served(auser):
    ann = await auser()
    async with ws_session(ann, headers=[(b"origin", b"http://localhost:8000")]) as s:
        assert s.welcome["user"]["id"] == ann.pk
        assert (await s.request({"type": "ping"}))["type"] == "pong"


async def test_no_origin_is_served(auser):
    ann = await auser()
    async with ws_session(ann, headers=[(b"user-agent", b"a-bot")]) as s:
        assert (await s.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://localhost.evil.example", b"null"])
async def test_foreign_origin_is_refused(auser, origin):
    from config.asgi import application

    ann = await auser()
    comm = WebsocketCommunicator(application, f"/ws/?token={token_for(ann)}", headers=[(b"origin", origin)])
    try:
        connected, _ = await comm.connect(timeout=5)
        assert not connected
    finally:
        await comm.disconnect()


async def test_unknown_session_id_gives_fresh_session(auser):
    ann = await auser()
    async with ws_session(ann, query="session=s_0123456789abcdef") as s:
        assert s.welcome["resumed"] is False
        assert s.welcome["session"].startswith("s_")
        assert s.welcome["session"] != "s_0123456789abcdef"
        assert s.welcome["channels"] == []


async def test_foreign_session_id_is_not_resumed(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a:
        assert (await a.request({"type": "subscribe", "channel": "topic:annonly"}))["type"] == "ok"
        ann_session = a.welcome["session"]
    async with ws_session(bob, query=f"session={ann_session}") as b:
        assert b.welcome["resumed"] is False
        assert b.welcome["session"] != ann_session
        assert b.welcome["channels"] == []


# --- heartbeat -------------------------------------------------------------------


async def test_heartbeat_closes_silent_session_but_not_a_pinging_one(auser, chat_settings):
    chat_settings(HEARTBEAT=1)
    ann = await auser()
    async with ws_session(ann) as silent, ws_session(ann) as lively:
        assert silent.welcome["heartbeat"] == 1
        silent_closed = asyncio.ensure_future(silent.closed(timeout=30))
        pings = 0
        # The lively one pings every half second for as long as the silent one lives,
        # and at least for three heartbeat intervals.
        while not silent_closed.done() or pings < 6:
            assert (await lively.request({"type": "ping"}))["type"] == "pong"
            pings += 1
            await asyncio.sleep(0.5)
        code = await silent_closed
        assert code == 4408
        # Past three heartbeat intervals of pinging, the lively one is still open.
        assert (await lively.request({"type": "ping"}))["type"] == "pong"


async def test_any_frame_counts_as_life(auser, chat_settings):
    chat_settings(HEARTBEAT=1)
    ann = await auser()
    async with ws_session(ann) as s:
        for _ in range(6):  # 3 s of frames that are not pings, some of them bad
            await s.send("not json")
            assert (await s.recv())["code"] == "bad_json"
            await asyncio.sleep(0.5)
        assert (await s.request({"type": "ping"}))["type"] == "pong"


# --- token expiry and `auth` -----------------------------------------------------


async def test_token_expiry_closes_4401(auser):
    ann = await auser()
    async with ws_session(ann, token=token_for(ann, lifetime=2)) as s:
        assert (await s.request({"type": "ping"}))["type"] == "pong"
        assert await s.closed(timeout=4) == 4401


async def test_auth_with_fresh_token_extends_the_session(auser):
    ann = await auser()
    async with ws_session(ann, token=token_for(ann, lifetime=2)) as s:
        ok = await s.request({"type": "auth", "token": token_for(ann)})
        assert ok["type"] == "ok"
        assert ok["expires_at"] > time.time() + 600
        assert await s.nothing(timeout=3)  # past the first token's expiry
        assert (await s.request({"type": "ping"}))["type"] == "pong"


async def test_auth_with_another_users_token_is_forbidden(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann, token=token_for(ann, lifetime=2)) as s:
        err = await s.request({"type": "auth", "token": token_for(bob)})
        assert err["type"] == "error" and err["code"] == "forbidden"
        # The token in force is still ann's short one.
        assert await s.closed(timeout=4) == 4401


@pytest.mark.parametrize("bad", ["garbage", "expired"])
async def test_auth_with_bad_token_is_unauthorized(auser, bad):
    ann = await auser()
    token = "garbage" if bad == "garbage" else token_for(ann, lifetime=-30)
    async with ws_session(ann) as s:
        err = await s.request({"type": "auth", "token": token})
        assert err["type"] == "error" and err["code"] == "unauthorized"
        assert (await s.request({"type": "ping"}))["type"] == "pong"


async def test_auth_without_token_is_bad_request(auser):
    ann = await auser()
    async with ws_session(ann) as s:
        err = await s.request({"type": "auth"})
        assert err["type"] == "error" and err["code"] == "bad_request"


# --- moderation ------------------------------------------------------------------


async def test_deactivating_a_user_closes_their_sessions_4403(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a1, ws_session(ann) as a2, ws_session(bob) as b:

        def ban():
            ann.is_active = False
            ann.save()

        await sync_to_async(ban)()
        assert await a1.closed() == 4403
        assert await a2.closed() == 4403
        assert (await b.request({"type": "ping"}))["type"] == "pong"
    async with ws_session(ann, expect_welcome=False) as again:
        assert await again.closed() == 4403


async def test_saving_an_active_user_keeps_sessions(auser):
    ann = await auser()
    async with ws_session(ann) as s:
        ann.first_name = "Ann"
        await sync_to_async(ann.save)()
        assert await s.nothing(timeout=0.5)
        assert (await s.request({"type": "ping"}))["type"] == "pong"
