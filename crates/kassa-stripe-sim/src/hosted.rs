//! The hosted checkout page behind a session's `url` (`/c/pay/{cs_id}`): plain HTML, no JavaScript.
//! It shows the line items and total, a select of test cards (in live mode the simulator's live card first) and a Pay (or, in setup mode, Save card)
//! button; paying completes the session and redirects (303) to `success_url`, where Stripe replaces the
//! literal `{CHECKOUT_SESSION_ID}` with the session id (docs: Checkout, "custom success page").

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde_json::Value;

use crate::cards::{LIVE_CARD, TEST_CARDS};
use crate::control::body_params;
use crate::currency::format_major;
use crate::resources::checkout;
use crate::sim::Shared;
use crate::state::Origin;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn money(amount: i64, currency: &str) -> String {
    format!(
        "{} {}",
        format_major(amount, currency),
        currency.to_uppercase()
    )
}

fn layout(title: &str, content: &str, live: bool) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}}\
         table{{width:100%;border-collapse:collapse}}td,th{{padding:.3rem;border-bottom:1px solid #ddd;text-align:left}}\
         .error{{color:#b00020;font-weight:bold}}.num{{text-align:right}}</style></head>\
         <body><p><small>Kassa Stripe simulator — {mode} mode</small></p><h1>{t}</h1>{content}</body></html>\n",
        t = escape(title),
        mode = if live { "live" } else { "test" }
    )
}

fn render(session: &Value, items: &[Value], error: Option<&str>) -> String {
    let id = session["id"].as_str().unwrap_or_default();
    let currency = session["currency"].as_str().unwrap_or("usd");
    let setup = session["mode"] == "setup";
    let live = session["livemode"] == true;
    match session["status"].as_str() {
        Some("complete") => {
            return layout(
                "Checkout complete",
                "<p>This Checkout Session is complete.</p>",
                live,
            )
        }
        Some("expired") => {
            return layout(
                "Checkout expired",
                "<p>This Checkout Session has expired.</p>",
                live,
            )
        }
        _ => {}
    }
    let mut out = String::new();
    if let Some(e) = error {
        out.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(e)
        ));
    }
    if setup {
        out.push_str("<p>Save a card for future payments.</p>");
    } else {
        out.push_str("<table><thead><tr><th>Item</th><th class=\"num\">Qty</th><th class=\"num\">Amount</th></tr></thead><tbody>");
        for item in items {
            out.push_str(&format!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(item["description"].as_str().unwrap_or_default()),
                item["quantity"].as_i64().unwrap_or(0),
                escape(&money(item["amount_total"].as_i64().unwrap_or(0), currency)),
            ));
        }
        let total = money(session["amount_total"].as_i64().unwrap_or(0), currency);
        out.push_str(&format!("</tbody><tfoot><tr><th>Total</th><th></th><th class=\"num\">{}</th></tr></tfoot></table>", escape(&total)));
    }
    let email = session["customer_email"].as_str().unwrap_or_default();
    out.push_str(&format!(
        "<form method=\"post\" action=\"/c/pay/{}\">",
        escape(id)
    ));
    out.push_str(&format!(
        "<p><label>E-mail <input type=\"email\" name=\"email\" value=\"{}\" required></label></p>\
         <p><label>Name on card <input type=\"text\" name=\"name\"></label></p>\
         <p><label>Test card <select name=\"payment_method\">",
        escape(email)
    ));
    // In live mode the simulator's live card pays; Stripe's test cards are declined there.
    let live_first = live.then_some(&LIVE_CARD);
    for card in live_first.into_iter().chain(TEST_CARDS) {
        out.push_str(&format!(
            "<option value=\"{}\">{} — {}</option>",
            escape(card.pm),
            escape(card.number),
            escape(card.label)
        ));
    }
    let button = if setup {
        "Save card".to_owned()
    } else {
        format!(
            "Pay {}",
            money(session["amount_total"].as_i64().unwrap_or(0), currency)
        )
    };
    out.push_str(&format!(
        "</select></label></p><p><button type=\"submit\">{}</button></p></form>",
        escape(&button)
    ));
    if let Some(cancel) = session["cancel_url"].as_str() {
        out.push_str(&format!("<p><a href=\"{}\">Cancel</a></p>", escape(cancel)));
    }
    layout(if setup { "Save your card" } else { "Pay" }, &out, live)
}

fn load(shared: &Shared, id: &str) -> Option<(Value, Vec<Value>)> {
    let mode = shared.mode_of(id)?;
    let (found, _) = shared.execute(mode, Origin::default(), |ctx| {
        let session = ctx
            .store
            .get(id)
            .filter(|s| s["object"] == "checkout.session")
            .cloned()?;
        let items = ctx.store.line_items.get(id).cloned().unwrap_or_default();
        Some((session, items))
    });
    found
}

fn not_found() -> Response<Body> {
    html(
        StatusCode::NOT_FOUND,
        layout("Not found", "<p>No such Checkout Session.</p>", false),
    )
}

/// `GET /c/pay/{id}`: the checkout page.
pub async fn page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response<Body> {
    match load(&shared, &id) {
        Some((session, items)) => html(StatusCode::OK, render(&session, &items, None)),
        None => not_found(),
    }
}

/// `POST /c/pay/{id}`: the Pay button. 303 to `success_url` on success; the page with the decline message
/// (and the error's status) otherwise.
pub async fn pay(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let p = match body_params(&headers, &body) {
        Ok(p) => p,
        Err(e) => {
            return crate::control::bad_request(e.error["message"].as_str().unwrap_or("bad form"))
        }
    };
    let completion = checkout::Completion {
        payment_method: p
            .str("payment_method")
            .unwrap_or_else(|| "pm_card_visa".to_owned()),
        email: p.str("email"),
        name: p.str("name"),
    };
    let mode = shared.mode_of(&id).unwrap_or_default();
    let (result, _) = shared.execute(mode, Origin::default(), |ctx| {
        checkout::complete(ctx, &id, &completion)
    });
    match result {
        Ok(session) => match session["success_url"].as_str() {
            Some(url) => {
                let target = url.replace("{CHECKOUT_SESSION_ID}", &id);
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::SEE_OTHER;
                if let Ok(v) = HeaderValue::from_str(&target) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            None => html(StatusCode::OK, render(&session, &[], None)),
        },
        Err(e) => match load(&shared, &id) {
            Some((session, items)) => {
                let message = e.error["message"].as_str().unwrap_or("The payment failed.");
                html(e.status, render(&session, &items, Some(message)))
            }
            None => not_found(),
        },
    }
}
