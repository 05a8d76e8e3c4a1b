"""The demo page in Debian's Chromium (Playwright), against real server processes.

Two browser contexts are two users. They exchange direct messages and see
typing, presence, receipts, edits and deletions; one goes offline (its
context closed) and comes back; and a page whose server restarts resumes
its session, with every message shown exactly once.

Playwright's `expect` waits for a condition up to its timeout; nothing here
asserts on how long something took.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.client import User
from tests.e2e.servers import Server

from .conftest import CHROMIUM, Servers

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.e2e,
    # Skipped only outside CI (.ci/run installs Chromium and sets CI): in CI a missing browser fails.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="Chromium is not installed (apt-get install chromium)",
    ),
]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15000
# A reconnect waits up to the client's backoffMax (15 s) after the server is back.
RECONNECT_MS = 40000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    expect.set_options(timeout=WAIT_MS)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_tab(browser: Any) -> Iterator[Any]:
    """`open_tab(server, **context_args)`: a page in a new context, closed after the
    test (after a failure's screenshots are taken)."""
    tabs: list[Tab] = []

    def open_(server: Server, **context_args: Any) -> Tab:
        tabs.append(Tab(browser, server, **context_args))
        return tabs[-1]

    yield open_
    for tab in tabs:
        tab.close()


@pytest.fixture(scope="module")
def node(servers: Servers) -> Server:
    return servers.start("browser")


class Tab:
    """One user's page, with the page errors it raised."""

    def __init__(self, browser: Any, server: Server, **context_args: Any) -> None:
        self.context = browser.new_context(**context_args)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.closed = False
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self.on_console)
        self.page.goto(server.http_url + "/")

    def on_console(self, msg: Any) -> None:
        # Expected: a socket refused while its server is down, and the 401/409
        # answers of the sign-in error checks. Nothing else.
        expected = ("WebSocket connection", "status of 401", "status of 409")
        if msg.type == "error" and not any(text in msg.text for text in expected):
            self.errors.append(msg.text)

    def sign_in(self, user: User, *, register: bool = False, expect_error: str = "") -> None:
        page = self.page
        page.fill("#auth-username", user.username)
        page.fill("#auth-password", user.password)
        page.click("#register" if register else "#login")
        if expect_error:
            expect(page.locator("#auth-error")).to_contain_text(expect_error)
            expect(page.locator("#auth")).to_be_visible()
            return
        expect(page.locator("#status")).to_have_attribute("data-status", "open")
        expect(page.locator("#me")).to_have_text(user.username)

    def send(self, text: str) -> None:
        self.page.fill("#body", text)
        self.page.click("#send")

    def messages(self, text: str | None = None) -> Any:
        locator = self.page.locator("#messages li.msg:not(.pending)")
        return locator.filter(has_text=text) if text is not None else locator

    def open_channel(self, label: str) -> None:
        self.page.locator("#channels li", has_text=label).click()
        expect(self.page.locator("#conv-title")).to_have_text(label)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.context.close()


def test_two_users_chat_in_the_browser(browser: Any, open_tab: Any, node: Server) -> None:
    ann = User(0, f"ann{node.port}", "Pw-ann-0123456789", "")
    bob = node.api.new_user("bob")
    a = open_tab(node)
    b = open_tab(node, viewport=PHONE)  # bob is on a phone
    a.sign_in(ann, register=True)
    # A wrong password and a taken name are refused with the API's message.
    b.sign_in(User(bob.id, bob.username, "wrong-password", ""), expect_error="No active account")
    b.sign_in(User(0, ann.username, "Pw-other-0123456789", ""), register=True, expect_error="taken")
    b.sign_in(bob)

    # Ann starts a DM by username.
    a.page.fill("#dm-user", bob.username)
    a.page.click("#dm-form button")
    expect(a.page.locator("#conv-title")).to_have_text(f"New message to @{bob.username}")
    a.send("hello bob")
    expect(a.page.locator("#conv-title")).to_have_text(f"@{bob.username}")
    expect(a.messages("hello bob")).to_have_count(1)

    # Bob's channel list shows it unread; opening it reads it: ann sees the read ticks.
    unread = b.page.locator("#channels li", has_text=f"@{ann.username}").locator(".unread")
    expect(unread).to_have_text("1")
    b.open_channel(f"@{ann.username}")
    expect(b.messages("hello bob")).to_have_count(1)
    expect(unread).to_have_attribute("data-count", "0")
    expect(a.messages("hello bob").locator(".ticks")).to_have_attribute("data-state", "read")

    # Typing: bob types, ann sees it, and it ends when bob sends.
    b.page.locator("#body").press_sequentially("hi ann, how")
    expect(a.page.locator("#typing")).to_have_text(f"{bob.username} is typing…")
    b.page.locator("#body").press_sequentially(" are you?")
    b.page.click("#send")
    expect(a.messages("hi ann, how are you?")).to_have_count(1)
    expect(a.page.locator("#typing")).to_have_text("")

    # Presence: bob is online in ann's header and list; then bob goes away (context closed).
    expect(a.page.locator("#conv-presence")).to_have_attribute("data-status", "online")
    expect(a.page.locator("#channels li .dot")).to_have_attribute("data-status", "online")
    b.close()
    expect(a.page.locator("#conv-presence")).to_have_attribute("data-status", "offline")
    expect(a.page.locator("#conv-presence")).to_contain_text("last seen")

    # While bob is offline ann writes, edits and deletes.
    a.send("are you there?")
    a.send("tpyo here")
    expect(a.messages("tpyo here")).to_have_count(1)
    typo = a.messages("tpyo here")
    typo.hover()
    typo.locator("button.edit").click()
    expect(a.page.locator("#body")).to_have_value("tpyo here")
    a.page.fill("#body", "typo fixed")
    a.page.click("#send")
    expect(a.messages("typo fixed")).to_have_count(1)
    expect(a.messages("typo fixed")).to_contain_text("edited")
    a.send("to be deleted")
    doomed = a.messages("to be deleted")
    doomed.hover()
    doomed.locator("button.delete").click()
    expect(a.messages("message deleted")).to_have_count(1)

    # Bob comes back in a new browser: history, unread count, presence online again.
    b = open_tab(node, viewport=PHONE)
    b.sign_in(bob)
    expect(a.page.locator("#conv-presence")).to_have_attribute("data-status", "online")
    unread = b.page.locator("#channels li", has_text=f"@{ann.username}").locator(".unread")
    expect(unread).to_have_text("2")  # ann's three since bob read, less the deleted one
    b.open_channel(f"@{ann.username}")
    for text in ("hello bob", "hi ann, how are you?", "are you there?", "typo fixed", "message deleted"):
        expect(b.messages(text)).to_have_count(1)
    expect(b.messages()).to_have_count(5)
    expect(b.messages("tpyo")).to_have_count(0)
    expect(a.messages("are you there?").locator(".ticks")).to_have_attribute("data-state", "read")

    # Live edit reaches the other side; the phone layout has a way back to the list.
    a.send("live one")
    expect(b.messages("live one")).to_have_count(1)
    live = a.messages("live one")
    live.hover()
    live.locator("button.edit").click()
    a.page.fill("#body", "live one, edited")
    a.page.click("#send")
    expect(b.messages("live one, edited")).to_have_count(1)
    b.page.click("#back")
    expect(b.page.locator("#channels")).to_be_visible()

    # Search finds the message, and its result opens the conversation.
    b.page.fill("#search-q", "fixed")
    b.page.press("#search-q", "Enter")
    result = b.page.locator("#search-list li", has_text="typo")
    expect(result).to_have_count(1)
    expect(result.locator("mark")).to_have_text("fixed")
    result.click()
    expect(b.page.locator("#conv-title")).to_have_text(f"@{ann.username}")

    # A topic opened (and created) by name.
    a.page.fill("#topic-name", "lobby")
    a.page.click("#topic-form button")
    expect(a.page.locator("#conv-title")).to_have_text("#lobby")
    a.send("hello lobby")
    expect(a.messages("hello lobby")).to_have_count(1)
    expect(a.page.locator("#channels li", has_text="#lobby")).to_have_count(1)

    assert a.errors == [] and b.errors == [], (a.errors, b.errors)


def seqs_shown(tab: Tab) -> list[int]:
    return [
        int(s)
        for s in tab.page.locator("#messages li.msg:not(.pending)").evaluate_all("els => els.map(e => e.dataset.seq)")
    ]


def test_page_resumes_after_a_server_restart_and_shows_each_message_once(
    browser: Any, open_tab: Any, servers: Servers
) -> None:
    node1 = servers.start("restart-a")
    node2 = servers.start("restart-b")
    ann, bob = node2.api.new_users(2, "rs")
    a = open_tab(node1)
    b = open_tab(node2)
    a.sign_in(ann)
    b.sign_in(bob)
    b.page.fill("#dm-user", ann.username)
    b.page.click("#dm-form button")
    b.send("before the restart")
    a.open_channel(f"@{bob.username}")
    expect(a.messages("before the restart")).to_have_count(1)

    port = node1.port
    node1.stop()  # SIGTERM: the server closes sockets with 1012
    expect(a.page.locator("#status")).to_have_attribute("data-status", "reconnecting")

    # While ann's server is down, bob writes (on the other server) and so does ann (queued).
    for i in range(1, 4):
        b.send(f"during the outage {i}")
        expect(b.messages(f"during the outage {i}")).to_have_count(1)
    a.send("ann while offline")
    expect(a.page.locator("#messages li.pending", has_text="ann while offline")).to_have_count(1)

    servers.start("restart-a-again", port=port)
    expect(a.page.locator("#status")).to_have_attribute("data-status", "open", timeout=RECONNECT_MS)
    expect(a.page.locator("#status")).to_have_attribute("data-resumed", "true")
    expect(a.page.locator("#status")).to_have_text("Online · resumed")

    for i in range(1, 4):
        expect(a.messages(f"during the outage {i}")).to_have_count(1)
    expect(a.messages("ann while offline")).to_have_count(1)
    expect(a.page.locator("#messages li.pending")).to_have_count(0)
    expect(b.messages("ann while offline")).to_have_count(1)

    # Exactly once: seqs 1..5 on both pages, no repeats, and so on the server.
    expect(a.messages()).to_have_count(5)
    expect(b.messages()).to_have_count(5)
    assert seqs_shown(a) == [1, 2, 3, 4, 5]
    assert seqs_shown(b) == [1, 2, 3, 4, 5]
    channel = a.page.locator("#messages li.msg").first.get_attribute("data-channel")
    stored = node2.api.history_all(ann.token, channel)
    assert [m["body"] for m in stored].count("ann while offline") == 1
    assert len(stored) == 5
    stats = a.page.evaluate("() => window.chat.stats")
    assert stats["resumes"] >= 1, stats
    assert re.fullmatch(r"s_\w+", a.page.evaluate("() => window.chat.sessionId"))
    assert a.errors == [] and b.errors == [], (a.errors, b.errors)
