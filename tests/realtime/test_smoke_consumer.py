import pytest

from tests.conftest import ws_session

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_publish_reaches_other_subscriber(make_user):
    from asgiref.sync import sync_to_async

    ann, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    async with ws_session(ann) as a, ws_session(bob) as b:
        assert (await b.request({"type": "subscribe", "channel": "topic:t1"}))["type"] == "ok"
        ok = await a.request({"type": "publish", "channel": "topic:t1", "body": "hi"})
        assert ok["message"]["seq"] == 1
        event = await b.recv()
        assert event["type"] == "message" and event["body"] == "hi" and event["from"]["id"] == ann.pk
        assert await a.nothing()
