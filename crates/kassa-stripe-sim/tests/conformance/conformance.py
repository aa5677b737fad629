"""Conformance of the Kassa Stripe simulator, checked with the unmodified official stripe-python.

Usage: conformance.py BASE_URL WEBHOOK_SECRET
Run by crates/kassa-stripe-sim/tests/conformance.rs; exits non-zero (with a traceback) on the first
failed check and prints one line per check that passed.
"""

import http.server
import json
import sys
import threading
import time
import urllib.request
import uuid

import stripe

BASE, SECRET = sys.argv[1], sys.argv[2]
stripe.api_key = "sk_test_kassa_conformance"
stripe.api_base = BASE
stripe.max_network_retries = 0
RUN = uuid.uuid4().hex[:8]
checked = []


def ok(what):
    checked.append(what)
    print(f"ok   {what}", flush=True)


def expect_error(cls, fn):
    try:
        fn()
    except cls as e:
        return e
    raise AssertionError(f"expected {cls.__name__}")


def sim_post(path, body):
    req = urllib.request.Request(
        BASE + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


# --- a webhook receiver, registered before anything is created --------------------------------------
received = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        received.append((body, self.headers.get("Stripe-Signature")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
sim_post("/_sim/webhook_endpoints", {"url": f"http://127.0.0.1:{server.server_address[1]}/webhooks/stripe"})

# --- authentication ---------------------------------------------------------------------------------
e = expect_error(stripe.AuthenticationError, lambda: stripe.Customer.list(api_key="sk_bogus_not_here"))
assert e.http_status == 401 and e.error.type == "invalid_request_error", e
expect_error(stripe.PermissionError, lambda: stripe.Customer.list(api_key="pk_test_publishable"))
ok("auth: bad key -> 401 AuthenticationError, publishable key -> PermissionError")

# --- customers --------------------------------------------------------------------------------------
email = f"jenny.{RUN}@example.com"
cus = stripe.Customer.create(email=email, name="Jenny Rosen", metadata={"run": RUN})
assert cus.id.startswith("cus_") and cus.object == "customer" and cus.email == email, cus
assert cus.last_response.headers["Request-Id"].startswith("req_")
assert stripe.Customer.retrieve(cus.id).metadata["run"] == RUN
upd = stripe.Customer.modify(cus.id, name="Jenny R.", metadata={"tier": "gold"})
assert upd.name == "Jenny R." and upd.metadata["run"] == RUN and upd.metadata["tier"] == "gold", upd
listed = stripe.Customer.list(email=email)
assert [c.id for c in listed.data] == [cus.id] and listed.object == "list" and listed.has_more is False, listed
gone = stripe.Customer.create(email=f"gone.{RUN}@example.com")
deleted = stripe.Customer.delete(gone.id)
assert deleted.deleted is True and deleted.id == gone.id, deleted
assert stripe.Customer.retrieve(gone.id).deleted is True
e = expect_error(stripe.InvalidRequestError, lambda: stripe.Customer.retrieve("cus_missing"))
assert e.http_status == 404 and e.code == "resource_missing" and "No such customer: 'cus_missing'" in e.user_message, e
ok("customers: create, retrieve, update (metadata merged), list by email, delete, 404 resource_missing")

# --- live mode: its own objects; a test object asked for with a live key ------------------------------
LIVE = "sk_live_kassa_conformance"
live = stripe.Customer.create(email=f"live.{RUN}@example.com", api_key=LIVE)
assert live.livemode is True and cus.livemode is False, (live, cus)
assert stripe.Customer.retrieve(live.id, api_key=LIVE).email == live.email
e = expect_error(stripe.InvalidRequestError, lambda: stripe.Customer.retrieve(cus.id, api_key=LIVE))
assert e.http_status == 404 and e.code == "resource_missing", e
assert e.user_message == (
    f"No such customer: '{cus.id}'; a similar object exists in test mode, but a live mode key was used to make this request."
), e.user_message
assert live.id not in [c.id for c in stripe.Customer.list(limit=100).data]
ok("live mode: livemode objects of its own; a test object with a live key -> 404 naming the other mode")

# --- payment methods --------------------------------------------------------------------------------
pm = stripe.PaymentMethod.attach("pm_card_visa", customer=cus.id)
assert pm.id.startswith("pm_") and pm.id != "pm_card_visa" and pm.customer == cus.id, pm
assert pm.card.brand == "visa" and pm.card.last4 == "4242", pm.card
assert stripe.PaymentMethod.attach(pm.id, customer=cus.id).customer == cus.id  # same customer: success
other = stripe.Customer.create(email=f"other.{RUN}@example.com")
expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentMethod.attach(pm.id, customer=other.id))
cus = stripe.Customer.modify(cus.id, invoice_settings={"default_payment_method": pm.id})
assert cus.invoice_settings.default_payment_method == pm.id
assert [p.id for p in stripe.PaymentMethod.list(customer=cus.id, type="card").data] == [pm.id]
assert stripe.Customer.retrieve(cus.id, expand=["invoice_settings.default_payment_method"]).invoice_settings.default_payment_method.card.last4 == "4242"
e = expect_error(stripe.CardError, lambda: stripe.PaymentMethod.attach("pm_card_visa_chargeDeclined", customer=cus.id))
assert e.code == "card_declined"
ok("payment methods: attach (new pm_ id), re-attach same customer ok, other customer refused, default, list, expand")

# --- off-session PaymentIntents ---------------------------------------------------------------------
pi = stripe.PaymentIntent.create(
    amount=2000, currency="usd", customer=cus.id, payment_method=pm.id, off_session=True, confirm=True
)
assert pi.status == "succeeded" and pi.amount_received == 2000 and pi.latest_charge.startswith("ch_"), pi
ok("payment intent: off-session pm_card_visa succeeds")

e = expect_error(
    stripe.CardError,
    lambda: stripe.PaymentIntent.create(
        amount=2000, currency="usd", customer=cus.id, payment_method="pm_card_visa_chargeDeclined",
        off_session=True, confirm=True,
    ),
)
assert e.http_status == 402 and e.code == "card_declined" and e.error.decline_code == "generic_decline", e
assert e.user_message == "Your card was declined."
failed = e.error.payment_intent
assert failed.status == "requires_payment_method" and failed.last_payment_error.code == "card_declined", failed
assert stripe.PaymentIntent.retrieve(failed.id).status == "requires_payment_method"
ok("payment intent: pm_card_visa_chargeDeclined -> 402 CardError, error.payment_intent requires_payment_method")

e = expect_error(
    stripe.CardError,
    lambda: stripe.PaymentIntent.create(
        amount=2000, currency="eur", customer=cus.id, payment_method="pm_card_authenticationRequired",
        off_session=True, confirm=True,
    ),
)
assert e.code == "authentication_required" and e.error.payment_intent.status == "requires_payment_method", e
onsession = stripe.PaymentIntent.create(amount=2000, currency="eur", payment_method="pm_card_authenticationRequired", confirm=True)
assert onsession.status == "requires_action" and onsession.next_action.type == "use_stripe_sdk", onsession
ok("payment intent: authentication_required off-session (402), requires_action on-session")

e = expect_error(stripe.InvalidRequestError, lambda: stripe.PaymentIntent.create(amount=49, currency="usd"))
assert e.code == "amount_too_small" and e.param == "amount", e
assert stripe.PaymentIntent.create(amount=50, currency="jpy").amount == 50  # zero-decimal: never x100
ok("amounts: 49 usd -> amount_too_small, 50 jpy accepted unscaled")

# --- idempotency ------------------------------------------------------------------------------------
key = f"kassa:charge:{RUN}:1"
first = stripe.PaymentIntent.create(amount=1234, currency="usd", idempotency_key=key)
again = stripe.PaymentIntent.create(amount=1234, currency="usd", idempotency_key=key)
assert first.id == again.id, (first.id, again.id)
assert again.last_response.headers.get("Idempotent-Replayed") == "true"
e = expect_error(stripe.IdempotencyError, lambda: stripe.PaymentIntent.create(amount=999, currency="usd", idempotency_key=key))
assert e.http_status == 400 and e.error.type == "idempotency_error", e
ok("idempotency: replay returns the same id (Idempotent-Replayed: true); other params -> IdempotencyError")

# --- refunds and legacy charges ---------------------------------------------------------------------
refund = stripe.Refund.create(payment_intent=pi.id, amount=500)
assert refund.status == "succeeded" and refund.amount == 500 and refund.charge == pi.latest_charge, refund
ch = stripe.Charge.retrieve(pi.latest_charge)
assert ch.amount_refunded == 500 and ch.refunded is False, ch
legacy = stripe.Charge.create(amount=1500, currency="gbp", source="tok_visa", description="legacy")
assert legacy.paid and legacy.status == "succeeded" and legacy.payment_method_details.card.last4 == "4242", legacy
e = expect_error(stripe.CardError, lambda: stripe.Charge.create(amount=1500, currency="gbp", source="tok_chargeDeclined"))
assert e.code == "card_declined" and e.error.charge.startswith("ch_"), e
ok("refunds and legacy charges: partial refund, tok_visa paid, tok_chargeDeclined -> CardError")

# --- checkout ---------------------------------------------------------------------------------------
session = stripe.checkout.Session.create(
    mode="payment",
    success_url="https://shop.example/success?session_id={CHECKOUT_SESSION_ID}",
    cancel_url="https://shop.example/cancel",
    line_items=[{"price_data": {"currency": "jpy", "unit_amount": 1500, "product_data": {"name": "Matcha"}}, "quantity": 2}],
)
assert session.id.startswith("cs_test_") and session.amount_total == 3000 and session.currency == "jpy", session
assert session.url.startswith(BASE) and session.status == "open" and session.payment_intent is None, session
assert session.expires_at - session.created == 24 * 3600
items = stripe.checkout.Session.retrieve(session.id, expand=["line_items"]).line_items
assert items.data[0].amount_total == 3000 and items.data[0].quantity == 2 and items.data[0].description == "Matcha", items
setup = stripe.checkout.Session.create(mode="setup", currency="usd", customer=cus.id, success_url="https://shop.example/ok")
sim_post(f"/_sim/checkout/sessions/{setup.id}/complete", {"payment_method": "pm_card_mastercard"})
done = stripe.checkout.Session.retrieve(setup.id, expand=["setup_intent.payment_method"])
assert done.status == "complete" and done.setup_intent.status == "succeeded", done
assert done.setup_intent.payment_method.card.last4 == "4444" and done.setup_intent.payment_method.customer == cus.id
expired = stripe.checkout.Session.expire(stripe.checkout.Session.create(mode="setup", currency="usd").id)
assert expired.status == "expired"
ok("checkout: JPY price_data unscaled (2 x 1500 = 3000), line_items expand, setup completion, expire")

# --- products search --------------------------------------------------------------------------------
code = f"A1-{RUN}"
prod = stripe.Product.create(name="Tea", metadata={"product_code": code})
stripe.Product.create(name="Coffee", metadata={"product_code": f"B2-{RUN}"})
found = stripe.Product.search(query=f"metadata['product_code']:'{code}' AND active:'true'")
assert found.object == "search_result" and [p.id for p in found.data] == [prod.id], found
price = stripe.Price.create(product=prod.id, currency="usd", unit_amount=500)
assert price.product == prod.id and price.unit_amount == 500 and price.type == "one_time"
ok("products: search by metadata['product_code'] AND active, price create")

# --- events -----------------------------------------------------------------------------------------
events = stripe.Event.list(type="customer.created", limit=100)
assert events.data and all(ev.type == "customer.created" for ev in events.data), events
assert cus.id in [ev.data.object.id for ev in events.data]
since = stripe.Event.list(created={"gte": int(time.time()) - 3600}, limit=3)
assert len(since.data) == 3 and since.has_more is True
ok("events: list filtered by type, created[gte], limit/has_more")

# --- webhooks ---------------------------------------------------------------------------------------
deadline = time.time() + 15
while time.time() < deadline and len(received) < len(stripe.Event.list(limit=100).data):
    time.sleep(0.1)
assert received, "no webhook received"
types = set()
for body, sig in received:
    event = stripe.Webhook.construct_event(body, sig, SECRET)
    types.add(event.type)
assert {"customer.created", "payment_intent.succeeded", "payment_intent.payment_failed", "checkout.session.completed"} <= types, types
body, sig = received[0]
expect_error(stripe.SignatureVerificationError, lambda: stripe.Webhook.construct_event(body + b" ", sig, SECRET))
expect_error(stripe.SignatureVerificationError, lambda: stripe.Webhook.construct_event(body, sig, "whsec_wrong"))
ok(f"webhooks: {len(received)} deliveries verified by stripe.Webhook.construct_event; tampering rejected")

print(f"{len(checked)} passed, 0 failed")
