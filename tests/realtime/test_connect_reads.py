"""What the connects of a burst read from the database, in one call (real PostgreSQL)."""

import pytest

from messaging.channels import BROADCAST, Kind, system_channel
from messaging.models import Channel
from realtime.auth import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, TokenCheck, token_decode, token_user_check
from realtime.consumers import connect_reads_many
from tests.conftest import token_for

pytestmark = pytest.mark.django_db


def auto(uid):
    return [str(BROADCAST), str(system_channel(uid))]


def test_each_connect_of_a_batch_gets_its_own_user_and_seqs(make_user):
    ann, bob = make_user("ann"), make_user("bob")
    banned = make_user("banned", is_active=False)
    gone = make_user("gone")
    gone_token = token_for(gone)
    gone.delete()
    Channel.objects.update_or_create(name=str(BROADCAST), defaults={"last_seq": 7, "kind": Kind.BROADCAST.value})
    Channel.objects.update_or_create(
        name=str(system_channel(bob.pk)), defaults={"last_seq": 3, "kind": Kind.SYSTEM.value}
    )
    bad = TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason="no token")
    items = [
        (token_decode(token_for(ann)), auto(ann.pk)),
        (token_decode(token_for(bob)), auto(bob.pk)),
        (token_decode(token_for(banned)), auto(banned.pk)),
        (token_decode(gone_token), auto(0)),
        (bad, auto(0)),
        (token_decode(token_for(ann)), auto(ann.pk)),  # a second session of ann
    ]
    out = connect_reads_many(items)
    assert [check.user.pk if check.user else check.close_code for check, _ in out] == [
        ann.pk,
        bob.pk,
        CLOSE_FORBIDDEN,
        CLOSE_UNAUTHORIZED,
        CLOSE_UNAUTHORIZED,
        ann.pk,
    ]
    assert out[0][1] == {str(BROADCAST): 7, str(system_channel(ann.pk)): 0}
    assert out[1][1] == {str(BROADCAST): 7, str(system_channel(bob.pk)): 3}
    assert out[5][1] == out[0][1]
    assert out[2][1] == out[3][1] == out[4][1] == {}  # refused: nothing read for them
    assert out[4][0] is bad


def test_a_batch_of_refusals_reads_no_channels(make_user):
    banned = make_user("banned", is_active=False)
    [(check, seqs)] = connect_reads_many([(token_decode(token_for(banned)), auto(banned.pk))])
    assert (check.close_code, check.reason, seqs) == (CLOSE_FORBIDDEN, "user is inactive", {})


def test_token_user_check_of_one_token(make_user):
    ann = make_user("ann")
    assert token_user_check(token_decode(token_for(ann))).user == ann
    assert token_user_check(TokenCheck(close_code=CLOSE_UNAUTHORIZED)).close_code == CLOSE_UNAUTHORIZED
