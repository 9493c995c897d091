from smsdispatch.keys import Keys
from smsdispatch.ledger import Claim, Ledger, fingerprint


def make(redis_client, lease=30):
    return Ledger(redis_client, Keys("t"), lease=lease, ttl=3600)


def test_first_claim_wins_and_a_second_is_busy_until_the_lease_ends(redis_client):
    ledger = make(redis_client)
    first = ledger.claim("k", fp="a", message_id="m", now=100.0)
    second = ledger.claim("k", fp="a", message_id="m", now=101.0)
    assert first.answer is Claim.CLAIMED and second.answer is Claim.BUSY
    assert second.lease_until == 130.0
    third = ledger.claim("k", fp="a", message_id="m", now=131.0)
    assert third.answer is Claim.RECONCILE and third.first_claimed_at == 100.0


def test_other_fingerprint_is_a_conflict_in_every_state(redis_client):
    ledger = make(redis_client)
    c = ledger.claim("k", fp="a", message_id="m", now=0)
    assert ledger.claim("k", fp="b", message_id="m", now=1).answer is Claim.CONFLICT
    ledger.release("k", c.owner, ambiguous=False)
    assert ledger.claim("k", fp="b", message_id="m", now=2).answer is Claim.CONFLICT
    ledger.complete("k")
    assert ledger.claim("k", fp="b", message_id="m", now=3).answer is Claim.CONFLICT


def test_pending_is_claimable_again_ambiguous_must_reconcile_done_is_final(redis_client):
    ledger = make(redis_client)
    c = ledger.claim("k", fp="a", message_id="m", now=0)
    assert ledger.release("k", c.owner, ambiguous=False)
    c = ledger.claim("k", fp="a", message_id="m", now=1)
    assert c.answer is Claim.CLAIMED and c.first_claimed_at == 0
    assert ledger.release("k", c.owner, ambiguous=True)
    c = ledger.claim("k", fp="a", message_id="m", now=2)
    assert c.answer is Claim.RECONCILE
    ledger.complete("k")
    assert ledger.claim("k", fp="a", message_id="m", now=3).answer is Claim.DONE


def test_only_the_holder_can_release(redis_client):
    ledger = make(redis_client)
    ledger.claim("k", fp="a", message_id="m", now=0)
    assert not ledger.release("k", "someone-else", ambiguous=False)
    assert ledger.state("k") == "claimed"


def test_entries_expire_after_the_ttl(redis_client):
    ledger = make(redis_client)
    ledger.claim("k", fp="a", message_id="m", now=0)
    assert 3500 < redis_client.ttl(Keys("t").idempotency("k")) <= 3600


def test_fingerprint_is_stable_and_order_independent():
    assert fingerprint({"a": 1, "b": "é"}) == fingerprint({"b": "é", "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_exhausted_keys_reopen_for_a_new_submission_only(redis_client):
    ledger = make(redis_client)
    ledger.claim("k", fp="a", message_id="m", now=0, submission="s1")
    ledger.complete("k", reopenable=True)
    assert ledger.claim("k", fp="a", message_id="m", now=1, submission="s1").answer is Claim.DONE
    again = ledger.claim("k", fp="a", message_id="m", now=2, submission="s2")
    assert again.answer is Claim.REOPENED
    ledger.complete("k")                      # this time it was accepted: final for everyone
    assert ledger.claim("k", fp="a", message_id="m", now=3, submission="s3").answer is Claim.DONE


def test_claims_can_be_pipelined(redis_client):
    ledger = make(redis_client)
    pipe = redis_client.pipeline(transaction=False)
    owners = [ledger.claim(k, fp="a", message_id=k, now=0, pipe=pipe) for k in ("x", "y", "x")]
    results = [ledger.parse(reply, owner) for reply, owner in zip(pipe.execute(), owners, strict=True)]
    assert [r.answer for r in results] == [Claim.CLAIMED, Claim.CLAIMED, Claim.BUSY]
