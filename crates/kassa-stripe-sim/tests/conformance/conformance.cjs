// Conformance of the Kassa Stripe simulator, checked with the unmodified official stripe-node.
//
// Usage: node conformance.cjs STRIPE_NODE_DIR BASE_URL WEBHOOK_SECRET
// Run by crates/kassa-stripe-sim/tests/conformance.rs; exits non-zero (with the failed assertion) on
// the first failed check and prints one line per check that passed. The same scenarios as
// conformance.py, plus autoPagingEach and stripe-node's typed errors.
"use strict";

const assert = require("node:assert/strict");
const http = require("node:http");
const crypto = require("node:crypto");

const [dir, BASE, SECRET] = process.argv.slice(2);
const Stripe = require(dir + "/node_modules/stripe");
const base = new URL(BASE);
const options = {
  host: base.hostname,
  port: Number(base.port),
  protocol: base.protocol.replace(":", ""),
  maxNetworkRetries: 0,
  telemetry: false,
};
const stripe = new Stripe("sk_test_kassa_conformance_node", options);
const RUN = crypto.randomBytes(4).toString("hex");
const checked = [];

function ok(what) {
  checked.push(what);
  console.log(`ok   ${what}`);
}

async function expectError(cls, fn) {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`);
    return e;
  }
  throw new assert.AssertionError({ message: `expected ${cls.name}` });
}

async function simPost(path, body) {
  const r = await fetch(BASE + path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.ok(r.ok, `${path}: ${r.status}`);
  return r.json();
}

async function main() {
  // --- a webhook receiver, registered before anything is created ----------------------------------
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push([Buffer.concat(chunks), req.headers["stripe-signature"]]);
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  await simPost("/_sim/webhook_endpoints", { url: `http://127.0.0.1:${server.address().port}/webhooks/stripe` });

  // --- authentication -------------------------------------------------------------------------------
  let e = await expectError(Stripe.errors.StripeAuthenticationError, () =>
    new Stripe("sk_bogus_not_here_at_all", options).customers.list(),
  );
  assert.equal(e.statusCode, 401);
  await expectError(Stripe.errors.StripePermissionError, () =>
    new Stripe("pk_test_publishable_key", options).customers.list(),
  );
  ok("auth: bad key -> 401 StripeAuthenticationError, publishable key -> StripePermissionError");

  // --- customers ------------------------------------------------------------------------------------
  const email = `jenny.${RUN}@example.com`;
  let cus = await stripe.customers.create({ email, name: "Jenny Rosen", metadata: { run: RUN } });
  assert.ok(cus.id.startsWith("cus_") && cus.object === "customer" && cus.email === email);
  assert.ok(cus.lastResponse.requestId.startsWith("req_"));
  assert.equal((await stripe.customers.retrieve(cus.id)).metadata.run, RUN);
  const upd = await stripe.customers.update(cus.id, { name: "Jenny R.", metadata: { tier: "gold" } });
  assert.equal(upd.name, "Jenny R.");
  assert.deepEqual(upd.metadata, { run: RUN, tier: "gold" });
  const listed = await stripe.customers.list({ email });
  assert.deepEqual(listed.data.map((c) => c.id), [cus.id]);
  assert.equal(listed.has_more, false);
  const gone = await stripe.customers.create({ email: `gone.${RUN}@example.com` });
  const deleted = await stripe.customers.del(gone.id);
  assert.equal(deleted.deleted, true);
  assert.equal((await stripe.customers.retrieve(gone.id)).deleted, true);
  e = await expectError(Stripe.errors.StripeInvalidRequestError, () => stripe.customers.retrieve("cus_missing"));
  assert.equal(e.statusCode, 404);
  assert.equal(e.code, "resource_missing");
  assert.match(e.message, /No such customer: 'cus_missing'/);
  ok("customers: create, retrieve, update (metadata merged), list by email, delete, 404 resource_missing");

  // --- live mode: its own objects; a test object asked for with a live key ----------------------------
  const live = new Stripe("sk_live_kassa_conformance_node", options);
  const liveCus = await live.customers.create({ email: `live.${RUN}@example.com` });
  assert.equal(liveCus.livemode, true);
  assert.equal(cus.livemode, false);
  e = await expectError(Stripe.errors.StripeInvalidRequestError, () => live.customers.retrieve(cus.id));
  assert.equal(e.statusCode, 404);
  assert.equal(e.code, "resource_missing");
  assert.equal(
    e.message,
    `No such customer: '${cus.id}'; a similar object exists in test mode, but a live mode key was used to make this request.`,
  );
  e = await expectError(Stripe.errors.StripeInvalidRequestError, () => stripe.customers.retrieve(liveCus.id));
  assert.match(e.message, /a similar object exists in live mode, but a test mode key was used/);
  ok("live mode: livemode objects of its own; an object of the other mode -> 404 naming that mode");

  // --- list pagination with autoPagingEach ------------------------------------------------------------
  const many = [];
  for (let i = 0; i < 5; i++) {
    many.push((await stripe.customers.create({ email: `page.${RUN}.${i}@example.com`, metadata: { page: RUN } })).id);
  }
  const seen = [];
  await stripe.customers.list({ limit: 2 }).autoPagingEach((c) => {
    if (c.metadata.page === RUN) seen.push(c.id);
  });
  assert.deepEqual(seen, [...many].reverse());
  const firstTwo = await stripe.customers.list({ limit: 2 }).autoPagingToArray({ limit: 2 });
  assert.equal(firstTwo.length, 2);
  ok("pagination: autoPagingEach walks every page (limit=2, newest first), autoPagingToArray");

  // --- payment methods ------------------------------------------------------------------------------
  const pm = await stripe.paymentMethods.attach("pm_card_visa", { customer: cus.id });
  assert.ok(pm.id.startsWith("pm_") && pm.id !== "pm_card_visa" && pm.customer === cus.id);
  assert.equal(pm.card.brand, "visa");
  assert.equal(pm.card.last4, "4242");
  assert.equal((await stripe.paymentMethods.attach(pm.id, { customer: cus.id })).customer, cus.id);
  const other = await stripe.customers.create({ email: `other.${RUN}@example.com` });
  await expectError(Stripe.errors.StripeInvalidRequestError, () =>
    stripe.paymentMethods.attach(pm.id, { customer: other.id }),
  );
  cus = await stripe.customers.update(cus.id, { invoice_settings: { default_payment_method: pm.id } });
  assert.equal(cus.invoice_settings.default_payment_method, pm.id);
  const pms = await stripe.paymentMethods.list({ customer: cus.id, type: "card" });
  assert.deepEqual(pms.data.map((p) => p.id), [pm.id]);
  const expanded = await stripe.customers.retrieve(cus.id, { expand: ["invoice_settings.default_payment_method"] });
  assert.equal(expanded.invoice_settings.default_payment_method.card.last4, "4242");
  e = await expectError(Stripe.errors.StripeCardError, () =>
    stripe.paymentMethods.attach("pm_card_visa_chargeDeclined", { customer: cus.id }),
  );
  assert.equal(e.code, "card_declined");
  e = await expectError(Stripe.errors.StripeInvalidRequestError, () =>
    stripe.paymentMethods.attach("pm_card_doesNotExist", { customer: cus.id }),
  );
  assert.equal(e.code, "resource_missing");
  ok("payment methods: attach (new pm_ id), same customer ok, other refused, default, list, expand, unknown pm_card_ -> resource_missing");

  // --- off-session PaymentIntents ------------------------------------------------------------------
  const pi = await stripe.paymentIntents.create({
    amount: 2000, currency: "usd", customer: cus.id, payment_method: pm.id, off_session: true, confirm: true,
  });
  assert.equal(pi.status, "succeeded");
  assert.equal(pi.amount_received, 2000);
  assert.ok(pi.latest_charge.startsWith("ch_"));
  ok("payment intent: off-session pm_card_visa succeeds");

  e = await expectError(Stripe.errors.StripeCardError, () =>
    stripe.paymentIntents.create({
      amount: 2000, currency: "usd", customer: cus.id, payment_method: "pm_card_visa_chargeDeclined",
      off_session: true, confirm: true,
    }),
  );
  assert.equal(e.statusCode, 402);
  assert.equal(e.type, "StripeCardError");
  assert.equal(e.code, "card_declined");
  assert.equal(e.decline_code, "generic_decline");
  assert.equal(e.message, "Your card was declined.");
  assert.equal(e.payment_intent.status, "requires_payment_method");
  assert.equal(e.payment_intent.last_payment_error.code, "card_declined");
  assert.equal((await stripe.paymentIntents.retrieve(e.payment_intent.id)).status, "requires_payment_method");
  ok("payment intent: pm_card_visa_chargeDeclined -> 402 StripeCardError with decline_code and payment_intent");

  e = await expectError(Stripe.errors.StripeCardError, () =>
    stripe.paymentIntents.create({
      amount: 2000, currency: "eur", customer: cus.id, payment_method: "pm_card_authenticationRequired",
      off_session: true, confirm: true,
    }),
  );
  assert.equal(e.code, "authentication_required");
  assert.equal(e.payment_intent.status, "requires_payment_method");
  const onSession = await stripe.paymentIntents.create({
    amount: 2000, currency: "eur", payment_method: "pm_card_authenticationRequired", confirm: true,
  });
  assert.equal(onSession.status, "requires_action");
  assert.equal(onSession.next_action.type, "use_stripe_sdk");
  ok("payment intent: authentication_required off-session (402), requires_action on-session");

  e = await expectError(Stripe.errors.StripeInvalidRequestError, () =>
    stripe.paymentIntents.create({ amount: 49, currency: "usd" }),
  );
  assert.equal(e.code, "amount_too_small");
  assert.equal(e.param, "amount");
  assert.equal((await stripe.paymentIntents.create({ amount: 50, currency: "jpy" })).amount, 50);
  ok("amounts: 49 usd -> amount_too_small, 50 jpy accepted unscaled");

  // --- idempotency ------------------------------------------------------------------------------------
  const key = `kassa:charge:${RUN}:1`;
  const first = await stripe.paymentIntents.create({ amount: 1234, currency: "usd" }, { idempotencyKey: key });
  const again = await stripe.paymentIntents.create({ amount: 1234, currency: "usd" }, { idempotencyKey: key });
  assert.equal(again.id, first.id);
  assert.equal(again.lastResponse.headers["idempotent-replayed"], "true");
  e = await expectError(Stripe.errors.StripeIdempotencyError, () =>
    stripe.paymentIntents.create({ amount: 999, currency: "usd" }, { idempotencyKey: key }),
  );
  assert.equal(e.statusCode, 400);
  assert.equal(e.type, "StripeIdempotencyError");
  ok("idempotency: replay returns the same id (idempotent-replayed: true); other params -> StripeIdempotencyError");

  // --- refunds and legacy charges ---------------------------------------------------------------------
  const refund = await stripe.refunds.create({ payment_intent: pi.id, amount: 500 });
  assert.equal(refund.status, "succeeded");
  assert.equal(refund.charge, pi.latest_charge);
  const ch = await stripe.charges.retrieve(pi.latest_charge);
  assert.equal(ch.amount_refunded, 500);
  assert.equal(ch.refunded, false);
  const legacy = await stripe.charges.create({ amount: 1500, currency: "gbp", source: "tok_visa", description: "legacy" });
  assert.ok(legacy.paid && legacy.status === "succeeded");
  assert.equal(legacy.payment_method_details.card.last4, "4242");
  e = await expectError(Stripe.errors.StripeCardError, () =>
    stripe.charges.create({ amount: 1500, currency: "gbp", source: "tok_chargeDeclined" }),
  );
  assert.equal(e.code, "card_declined");
  ok("refunds and legacy charges: partial refund, tok_visa paid, tok_chargeDeclined -> StripeCardError");

  // --- checkout -------------------------------------------------------------------------------------
  const session = await stripe.checkout.sessions.create({
    mode: "payment",
    success_url: "https://shop.example/success?session_id={CHECKOUT_SESSION_ID}",
    cancel_url: "https://shop.example/cancel",
    line_items: [{ price_data: { currency: "jpy", unit_amount: 1500, product_data: { name: "Matcha" } }, quantity: 2 }],
  });
  assert.ok(session.id.startsWith("cs_test_"));
  assert.equal(session.amount_total, 3000);
  assert.equal(session.status, "open");
  assert.equal(session.expires_at - session.created, 24 * 3600);
  const items = (await stripe.checkout.sessions.retrieve(session.id, { expand: ["line_items"] })).line_items;
  assert.equal(items.data[0].amount_total, 3000);
  assert.equal(items.data[0].description, "Matcha");
  const setup = await stripe.checkout.sessions.create({
    mode: "setup", currency: "usd", customer: cus.id, success_url: "https://shop.example/ok",
  });
  await simPost(`/_sim/checkout/sessions/${setup.id}/complete`, { payment_method: "pm_card_mastercard" });
  const done = await stripe.checkout.sessions.retrieve(setup.id, { expand: ["setup_intent.payment_method"] });
  assert.equal(done.status, "complete");
  assert.equal(done.setup_intent.status, "succeeded");
  assert.equal(done.setup_intent.payment_method.card.last4, "4444");
  assert.equal(done.setup_intent.payment_method.customer, cus.id);
  const expired = await stripe.checkout.sessions.expire(
    (await stripe.checkout.sessions.create({ mode: "setup", currency: "usd" })).id,
  );
  assert.equal(expired.status, "expired");
  ok("checkout: JPY price_data unscaled, line_items expand, setup completion, expire");

  // --- products search ------------------------------------------------------------------------------
  const code = `A1-${RUN}`;
  const prod = await stripe.products.create({ name: "Tea", metadata: { product_code: code } });
  await stripe.products.create({ name: "Coffee", metadata: { product_code: `B2-${RUN}` } });
  const found = await stripe.products.search({ query: `metadata['product_code']:'${code}' AND active:'true'` });
  assert.equal(found.object, "search_result");
  assert.deepEqual(found.data.map((p) => p.id), [prod.id]);
  const price = await stripe.prices.create({ product: prod.id, currency: "usd", unit_amount: 500 });
  assert.equal(price.product, prod.id);
  assert.equal(price.type, "one_time");
  ok("products: search by metadata['product_code'] AND active, price create");

  // --- events -----------------------------------------------------------------------------------------
  const events = await stripe.events.list({ type: "customer.created", limit: 100 });
  assert.ok(events.data.length > 0 && events.data.every((ev) => ev.type === "customer.created"));
  assert.ok(events.data.some((ev) => ev.data.object.id === cus.id));
  const since = await stripe.events.list({ created: { gte: Math.floor(Date.now() / 1000) - 3600 }, limit: 3 });
  assert.equal(since.data.length, 3);
  assert.equal(since.has_more, true);
  ok("events: list filtered by type, created[gte], limit/has_more");

  // --- webhooks -----------------------------------------------------------------------------------------
  const total = (await stripe.events.list({ limit: 100 })).data.length;
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline && received.length < total) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(received.length > 0, "no webhook received");
  const types = new Set();
  for (const [body, sig] of received) {
    types.add(stripe.webhooks.constructEvent(body, sig, SECRET).type);
  }
  for (const t of ["customer.created", "payment_intent.succeeded", "payment_intent.payment_failed", "checkout.session.completed"]) {
    assert.ok(types.has(t), `no ${t} webhook`);
  }
  const [body, sig] = received[0];
  assert.throws(() => stripe.webhooks.constructEvent(Buffer.concat([body, Buffer.from(" ")]), sig, SECRET), Stripe.errors.StripeSignatureVerificationError);
  assert.throws(() => stripe.webhooks.constructEvent(body, sig, "whsec_wrong"), Stripe.errors.StripeSignatureVerificationError);
  ok(`webhooks: ${received.length} deliveries verified by stripe.webhooks.constructEvent; tampering rejected`);

  server.close();
  console.log(`${checked.length} passed, 0 failed`);
  // Pooled keep-alive sockets (stripe-node's agent, the simulator's webhook client) would hold the
  // event loop open for minutes: the checks are done.
  process.exit(0);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
