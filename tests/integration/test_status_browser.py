"""The status page in a real browser: headless Chromium (Debian's, through chromium-driver and Selenium)
on the page `smsdispatch webhooks` serves, with data from real sends through a real worker to the fake
gateways. A person searches a message, opens a batch, replays dead letters, on a desktop and a phone
screen; screenshots land in test-output/status-page/ (not committed)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

if os.environ.get("CI") != "true":         # in CI a missing selenium fails the run
    pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from smsdispatch.devtools.fakes.devsms import FakeDevSms  # noqa: E402

from .browser import as_desktop, as_phone, chromium, fits_the_width, screenshot  # noqa: E402
from .conftest import wait_until  # noqa: E402
from .status import PASSWORD, USER, Stack, settings_for  # noqa: E402

NUMBER = "+998901239876"
MASKED = "+998*******76"


@pytest.fixture(scope="module")
def devsms():
    with FakeDevSms(token="status-devsms-token") as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(redis_url, fake_eskiz, devsms):
    settings = settings_for(redis_url, fake_eskiz, DEVSMS_TOKEN="status-devsms-token",
                            DEVSMS_BASE_URL=devsms.base_url)
    stack = Stack(settings)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser():
    driver = chromium(USER, PASSWORD)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, stack):
    as_desktop(browser)

    def go(path: str):
        browser.get(f"{stack.base}{path}")
        return WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    return go


def wait_for(browser, css: str):
    return WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def field(browser, label: str) -> str:
    """The value a record's field list shows for `label`."""
    return browser.find_element(By.XPATH, f"//dl[@class='fields']/div[dt='{label}']/dd").text


def test_a_message_is_found_by_the_last_digits_of_its_number_and_shown_with_it_masked(browser, stack, page, fake):
    key = f"order-{uuid.uuid4().hex[:8]}"
    text = "Your order <b>1001</b> has shipped"
    result = stack.producer.send_sms.delay(NUMBER, text, idempotency_key=key, metadata={"order": 1001}).get(timeout=30)
    assert result["status"] == "accepted"

    page("/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("9876")
    box.submit()
    link = wait_for(browser, f"table.messages a[href$='{result['message_id']}']")
    row = link.find_element(By.XPATH, "./ancestor::tr")
    assert row.find_element(By.CSS_SELECTOR, "td.number").text == MASKED
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "accepted"
    assert NUMBER not in browser.page_source and NUMBER[1:] not in browser.page_source
    screenshot(browser, "search")

    link.click()
    wait_for(browser, "#status")
    assert browser.find_element(By.ID, "status").text == "accepted"
    assert field(browser, "Number") == MASKED and field(browser, "Idempotency key") == key
    assert field(browser, "Gateway") == "eskiz"
    assert browser.find_element(By.ID, "text").text == text           # shown as text, not as markup
    assert browser.find_elements(By.CSS_SELECTOR, "#text b") == []
    history = [li.find_element(By.CSS_SELECTOR, ".status").text
               for li in browser.find_elements(By.CSS_SELECTOR, "ol.history li")]
    assert history == ["queued", "sending", "accepted"]
    assert NUMBER not in browser.page_source
    screenshot(browser, "message")
    as_phone(browser)
    browser.refresh()
    wait_for(browser, "#status")
    assert fits_the_width(browser)
    screenshot(browser, "message-phone", whole=False)


def test_a_batch_shows_its_progress_and_its_messages(browser, stack, page, fake):
    batch_id = f"sale-{uuid.uuid4().hex[:8]}"
    entries = [{"to": f"+99890{2000000 + i:07d}", "text": "Sale starts today"} for i in range(24)]
    entries.insert(7, {"to": "+99890", "text": "Sale starts today"})          # no such number: failed
    stack.producer.send_batch.delay(entries, batch_id=batch_id).get(timeout=30)
    batches = stack.producer.app.runtime.batches
    assert wait_until(lambda: batches.get(batch_id)["status"] == "done", timeout=30)

    page("/batches")
    link = wait_for(browser, f"table.batches a[href$='{batch_id}']")
    bar = link.find_element(By.XPATH, "./ancestor::tr").find_element(By.CSS_SELECTOR, "[role=progressbar]")
    assert (bar.get_attribute("aria-valuenow"), bar.get_attribute("aria-valuemax")) == ("25", "25")
    counts = link.find_element(By.XPATH, "./ancestor::tr").find_element(By.CSS_SELECTOR, ".counts").text
    assert "25 of 25 done (100%)" in counts and "24 accepted" in counts and "1 failed" in counts
    screenshot(browser, "batches")

    link.click()
    wait_for(browser, "table.entries")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Batch {batch_id}"
    assert browser.find_element(By.ID, "status").text == "done"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.entries tbody tr")
    assert len(rows) == 25
    shown = [(r.find_element(By.CSS_SELECTOR, "td.number").text, r.find_element(By.CSS_SELECTOR, ".status").text)
             for r in rows]
    assert shown[7][1] == "failed" and shown[0] == ("+998*******00", "accepted")
    assert all(status == "accepted" for n, (_, status) in enumerate(shown) if n != 7)
    assert all("*" in number for number, _ in shown)
    assert "+998902000000" not in browser.page_source
    screenshot(browser, "batch")
    screenshot(browser, "batch-screen", whole=False)     # what docs/img/status-page.png shows
    as_phone(browser)
    browser.refresh()
    wait_for(browser, "table.entries")
    assert fits_the_width(browser)
    screenshot(browser, "batch-phone", whole=False)


def test_a_dead_letter_that_may_have_been_sent_is_resent_only_after_a_second_confirmation(
        browser, stack, page, fake, devsms):
    maybe_key, unsent_key = f"maybe-{uuid.uuid4().hex[:6]}", f"unsent-{uuid.uuid4().hex[:6]}"
    devsms.fail_next(2, status=500)         # "may have been processed", and DevSMS cannot be asked
    maybe = stack.producer.send_sms.delay(NUMBER, "Maybe sent", gateway="devsms",
                                          idempotency_key=maybe_key).get(timeout=60)
    fake.fail_next(2, status=503)           # Eskiz says: not processed, provably unsent
    unsent = stack.producer.send_sms.delay(NUMBER, "Provably unsent", idempotency_key=unsent_key).get(timeout=60)
    assert maybe["error"]["code"] == unsent["error"]["code"] == "retries_exhausted"
    devsms_sends = len(devsms.sent)

    page("/dead")
    row = wait_for(browser, f"table.dead a[href$='{maybe['message_id']}']").find_element(By.XPATH, "./ancestor::tr")
    assert row.find_element(By.CSS_SELECTOR, "td[data-label='May have been sent']").text == "yes"
    assert row.find_element(By.CSS_SELECTOR, "td.number").text == MASKED
    screenshot(browser, "dead-letters")
    row.find_element(By.LINK_TEXT, "Replay…").click()

    warning = wait_for(browser, "#maybe-sent").text
    assert "may already have been sent" in warning and "the recipient gets it twice" in warning
    accept = browser.find_element(By.ID, "accept-duplicate")
    assert not accept.is_selected()
    button = browser.find_element(By.ID, "replay")
    assert button.text == "Resend although it may have been sent"
    screenshot(browser, "replay-maybe-sent")
    button.click()                          # without the second confirmation the browser does not submit:
    assert browser.execute_script("return arguments[0].validity.valueMissing", accept)
    assert "/replay?id=" in browser.current_url and browser.find_elements(By.ID, "replayed") == []
    assert maybe["message_id"] in stack.dead_letters() and len(devsms.sent) == devsms_sends

    accept.click()
    button.click()                          # (had the first click gone through, this one would be refused)
    assert "Submitted again" in wait_for(browser, "#replayed").text
    assert stack.wait_status(maybe["message_id"], "accepted") and len(devsms.sent) == devsms_sends + 1
    assert maybe["message_id"] not in stack.dead_letters()

    page("/dead")
    row = wait_for(browser, f"table.dead a[href$='{unsent['message_id']}']").find_element(By.XPATH, "./ancestor::tr")
    assert row.find_element(By.CSS_SELECTOR, "td[data-label='May have been sent']").text == "no"
    row.find_element(By.LINK_TEXT, "Replay…").click()
    wait_for(browser, "#replay")
    assert browser.find_elements(By.ID, "accept-duplicate") == [] and browser.find_elements(By.ID, "maybe-sent") == []
    screenshot(browser, "replay-unsent")
    browser.find_element(By.ID, "replay").click()
    wait_for(browser, "#replayed")
    assert stack.wait_status(unsent["message_id"], "accepted") and len(fake.sends_for(unsent["message_id"])) == 1


def test_every_page_fits_a_phone_and_the_gateways_page_shows_balances_and_circuits(browser, stack, page):
    stack.producer.app.runtime.poller.poll_balance(at=time.time())
    page("/gateways")
    wait_for(browser, "table.gateways tbody tr")
    row = browser.find_element(By.XPATH, "//table[@class='gateways']//tr[td[@data-label='Gateway']='eskiz']")
    assert row.find_element(By.CSS_SELECTOR, ".circuit").text == "closed"
    assert row.find_element(By.CSS_SELECTOR, "td[data-label='Balance']").text.split()[0] != "not"
    screenshot(browser, "gateways")
    as_phone(browser)
    for path, name in (("/", "search-phone"), ("/batches", "batches-phone"), ("/gateways", "gateways-phone"),
                       ("/dead", "dead-letters-phone")):
        browser.get(f"{stack.base}{path}")
        wait_for(browser, "h1")
        assert fits_the_width(browser), path
        screenshot(browser, name, whole=False)
