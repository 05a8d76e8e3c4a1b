"""Reads: full-text search over the messages a user may read.

On PostgreSQL the generated `search_vector` column of migration 0003 (GIN
indexed) is matched with `websearch_to_tsquery`, ranked with `ts_rank` and
highlighted with `ts_headline`. Other databases (the SQLite embedded default)
fall back to a case-insensitive substring match of every term, newest first.

Snippets are safe as HTML element content on both paths: `&`, `<` and `>`
of the message text are escaped and the only markup is `<mark>...</mark>`
around the matches.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import BooleanField, F, FloatField, Func, Q, QuerySet, TextField, Value
from django.db.models.expressions import RawSQL

from .channels import ChannelName
from .errors import BadRequest
from .models import Message
from .selectors import channel_readable, channels_auto_of, topics_visible, user_resolve

MAX_QUERY_LENGTH = 256
MAX_LIMIT = 100
SNIPPET_CHARS = 120

# ts_headline marks matches with these control characters, then they become
# <mark> tags. They are stripped from the body first so that a message cannot
# forge a mark.
_START, _STOP = "\x02", "\x03"
_HEADLINE_OPTIONS = f"StartSel={_START}, StopSel={_STOP}, MaxFragments=2, MaxWords=20, MinWords=5"


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: Message
    rank: float
    snippet: str


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[SearchHit]
    has_more: bool


def message_search(
    *,
    user: AbstractBaseUser,
    q: str,
    channel: ChannelName | None = None,
    sender: int | str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
    offset: int = 0,
    limit: int = 20,
    fulltext: bool | None = None,
) -> SearchPage:
    """Messages matching `q` that `user` may read, best first.

    `channel` must be readable (Forbidden, or NotFound for a missing topic);
    `sender` is a user id or username (NotFound if unknown); `before` and
    `after` bound `created_at` (exclusive). `fulltext`: None picks PostgreSQL
    full-text search when the database is PostgreSQL; False forces the
    substring fallback (it runs on any database).
    """
    q = search_query_validate(q)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    qs = messages_searchable(user=user)
    if channel is not None:
        stored = channel_readable(user=user, name=channel)
        if stored is None:  # a DM or notice channel with no message yet
            return SearchPage([], False)
        qs = qs.filter(channel=stored)
    if sender is not None:
        qs = qs.filter(sender=user_resolve(ref=sender))
    if before is not None:
        qs = qs.filter(created_at__lt=before)
    if after is not None:
        qs = qs.filter(created_at__gt=after)
    if fulltext is None:
        fulltext = connection.vendor == "postgresql"
    if fulltext:
        return _fulltext_page(qs, q=q, offset=offset, limit=limit)
    return _substring_page(qs, q=q, offset=offset, limit=limit)


def search_query_validate(q: object) -> str:
    if not isinstance(q, str) or not q.strip():
        raise BadRequest("q must be a non-empty search text")
    if len(q) > MAX_QUERY_LENGTH:
        raise BadRequest(f"q is longer than {MAX_QUERY_LENGTH} characters")
    if "\x00" in q:
        raise BadRequest("q must not contain NUL characters")
    return q.strip()


def messages_searchable(*, user: AbstractBaseUser) -> QuerySet[Message]:
    """Undeleted messages of every channel `user` may read, as one query.

    The channel rules are those of `selectors` (public and joined private
    topics; the user's DMs, system:U and broadcast), applied as two
    subqueries instead of a loop over channels.
    """
    readable = Q(channel__in=topics_visible(user=user).values("pk")) | Q(
        channel__in=channels_auto_of(user_id=user.pk).values("pk")
    )
    return Message.objects.filter(readable, deleted_at__isnull=True).select_related("channel", "sender")


def _page(rows: list[Message], limit: int) -> tuple[list[Message], bool]:
    return rows[:limit], len(rows) > limit


# --- PostgreSQL -------------------------------------------------------------------


def _config() -> Func:
    """The text search configuration the generated column was built with."""
    return Func(Value(settings.HISTORY["SEARCH_CONFIG"]), template="%(expressions)s::regconfig")


def _fulltext_page(qs: QuerySet[Message], *, q: str, offset: int, limit: int) -> SearchPage:
    # Every piece of user text is a bound parameter (Value), never SQL text.
    query = Func(_config(), Value(q), function="websearch_to_tsquery", output_field=TextField())
    # The generated column is not a model field (Django must not write it),
    # so it is named in SQL; the base table of a Message query keeps its name.
    vector = RawSQL('"messaging_message"."search_vector"', [], output_field=TextField())
    matches = Func(vector, query, template="(%(expressions)s)", arg_joiner=" @@ ", output_field=BooleanField())
    # Normalisation 1 divides by 1 + log(length): with equal matches, the
    # shorter message ranks higher.
    rank = Func(vector, query, Value(1), function="ts_rank", output_field=FloatField())
    body = Func(F("body"), Value(_START + _STOP), Value(""), function="translate", output_field=TextField())
    # Escape before ts_headline, not after: its parser takes <...> for HTML
    # tags and drops them from a headline, while entities come back verbatim.
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        body = Func(body, Value(char), Value(entity), function="replace", output_field=TextField())
    headline = Func(_config(), body, query, Value(_HEADLINE_OPTIONS), function="ts_headline", output_field=TextField())
    rows, has_more = _page(
        list(
            qs.filter(matches)
            .annotate(search_rank=rank, search_headline=headline)
            .order_by("-search_rank", "-created_at", "-pk")[offset : offset + limit + 1]
        ),
        limit,
    )
    return SearchPage([SearchHit(row, float(row.search_rank), _marked(row.search_headline)) for row in rows], has_more)


def _marked(headline: str) -> str:
    """The markers of an (already escaped) ts_headline result as <mark> tags.

    A headline is made of the escaped body's own tokens, so it holds no `<`
    or `>`; they are escaped again anyway, should that ever change.
    """
    headline = headline.replace("<", "&lt;").replace(">", "&gt;")
    return headline.replace(_START, "<mark>").replace(_STOP, "</mark>")


# --- Fallback: substring match ----------------------------------------------------


def _substring_page(qs: QuerySet[Message], *, q: str, offset: int, limit: int) -> SearchPage:
    terms = q.split()
    for term in terms:
        qs = qs.filter(body__icontains=term)
    rows, has_more = _page(list(qs.order_by("-created_at", "-pk")[offset : offset + limit + 1]), limit)
    return SearchPage([SearchHit(row, 0.0, substring_snippet(row.body, terms)) for row in rows], has_more)


def substring_snippet(body: str, terms: list[str], *, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters around the first match, every term in <mark>.

    Pure; the body is HTML-escaped piece by piece around the marks.
    """
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
    first = pattern.search(body)
    if first is None:
        return html.escape(body[:width], quote=False)
    start = max(0, min(first.start() - width // 3, len(body) - width))
    end = min(len(body), start + width)
    # The window starts before the first match; widen its end rather than
    # cutting a later match in two.
    for match in pattern.finditer(body, start, min(len(body), end + MAX_QUERY_LENGTH)):
        if match.start() < end < match.end():
            end = match.end()
    window = body[start:end]
    parts, pos = [], 0
    for match in pattern.finditer(window):
        parts.append(html.escape(window[pos : match.start()], quote=False))
        parts.append(f"<mark>{html.escape(match.group(), quote=False)}</mark>")
        pos = match.end()
    parts.append(html.escape(window[pos:], quote=False))
    return ("…" if start > 0 else "") + "".join(parts) + ("…" if end < len(body) else "")
