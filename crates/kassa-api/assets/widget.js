/* Kassa payment widget. Embed:
 *   <script src="{KASSA_PUBLIC_URL}/widget.js" async></script>
 *   <div data-kassa-widget="wid_…"></div>
 * No framework. The server says what is sold and for how much; this script never sends an
 * amount. It asks Kassa for the page load's PaymentIntent, loads Stripe.js (Stripe's own, or
 * the simulator's stand-in: the server says which), mounts the Payment Element, confirms in the
 * browser (3-D Secure included), shows a decline inline so the customer can try another card
 * on the same PaymentIntent, then asks Kassa to record the payment and goes to the success URL.
 * Styling: CSS variables on the element or any ancestor (--kassa-color-primary,
 * --kassa-color-text, --kassa-color-background, --kassa-color-danger, --kassa-border-radius,
 * --kassa-font-family), passed on to Stripe's Appearance API; data-kassa-theme="stripe|night|flat".
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var base = (script && script.src ? script.src : location.origin + "/widget.js")
    .replace(/\/widget\.js(\?.*)?$/, "");
  var stripeLoads = {};
  var counter = 0;

  var CSS =
    ".kassa-widget{font-family:var(--kassa-font-family,inherit);color:var(--kassa-color-text,inherit);" +
    "background:var(--kassa-color-background,transparent);max-width:32rem;box-sizing:border-box}" +
    ".kassa-widget *{box-sizing:border-box}" +
    ".kassa-widget__amount{font-size:1.4em;font-weight:600;margin:.25em 0 .75em}" +
    ".kassa-widget fieldset{border:0;margin:0 0 1em;padding:0}" +
    ".kassa-widget legend{font-weight:600;margin-bottom:.4em;padding:0}" +
    ".kassa-widget__choice{display:flex;align-items:center;gap:.5em;min-height:44px}" +
    ".kassa-widget__field{display:block;margin:0 0 1em}" +
    ".kassa-widget__field label{display:block;font-weight:600;margin-bottom:.3em}" +
    ".kassa-widget__field input{width:100%;min-height:44px;font:inherit;padding:.4em .6em;" +
    "border:1px solid var(--kassa-color-border,#8a8f98);border-radius:var(--kassa-border-radius,6px)}" +
    ".kassa-widget__card{margin:0 0 1em}" +
    ".kassa-widget__message{color:var(--kassa-color-danger,#b00020);min-height:1.2em;margin:0 0 .75em}" +
    ".kassa-widget__message:empty{margin:0}" +
    ".kassa-widget__pay{width:100%;min-height:44px;font:inherit;font-weight:600;cursor:pointer;" +
    "color:#fff;background:var(--kassa-color-primary,#0570de);border:0;border-radius:var(--kassa-border-radius,6px)}" +
    ".kassa-widget__pay[disabled]{opacity:.6;cursor:progress}" +
    ".kassa-widget__pay:focus-visible,.kassa-widget input:focus-visible{outline:3px solid var(--kassa-color-primary,#0570de);outline-offset:2px}" +
    ".kassa-widget__done{font-weight:600}";

  function addStyle() {
    if (document.getElementById("kassa-widget-style")) return;
    var style = document.createElement("style");
    style.id = "kassa-widget-style";
    style.textContent = CSS;
    (document.head || document.documentElement).appendChild(style);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, attrs[k]);
    });
    if (text != null) node.textContent = text;
    return node;
  }

  function randomToken() {
    var bytes = new Uint8Array(18);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      })
      .join("");
  }

  // JSON as text/plain: a simple cross-origin request, no preflight.
  function post(path, body) {
    return fetch(base + path, {
      method: "POST",
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body: JSON.stringify(body),
      credentials: "omit",
    }).then(function (response) {
      return response
        .json()
        .catch(function () {
          return {};
        })
        .then(function (json) {
          if (response.ok) return json;
          var message = (json && json.error && json.error.message) || "Something went wrong (" + response.status + ").";
          var error = new Error(message);
          error.status = response.status;
          throw error;
        });
    });
  }

  function loadStripe(src) {
    if (window.Stripe) return Promise.resolve(window.Stripe);
    if (!stripeLoads[src]) {
      stripeLoads[src] = new Promise(function (resolve, reject) {
        var tag = el("script", { src: src });
        tag.onload = function () {
          resolve(window.Stripe);
        };
        tag.onerror = function () {
          delete stripeLoads[src];
          reject(new Error("The payment form could not be loaded. Check your connection and reload the page."));
        };
        document.head.appendChild(tag);
      });
    }
    return stripeLoads[src];
  }

  // The page's CSS variables, as Stripe's Appearance API takes them.
  function appearance(root) {
    var style = getComputedStyle(root);
    var variables = {};
    var map = {
      colorPrimary: "--kassa-color-primary",
      colorText: "--kassa-color-text",
      colorBackground: "--kassa-color-background",
      colorDanger: "--kassa-color-danger",
      borderRadius: "--kassa-border-radius",
      fontFamily: "--kassa-font-family",
    };
    Object.keys(map).forEach(function (k) {
      var v = style.getPropertyValue(map[k]).trim();
      if (v) variables[k] = v;
    });
    var result = { variables: variables };
    var theme = root.getAttribute("data-kassa-theme");
    if (theme) result.theme = theme;
    return result;
  }

  function withParams(url, params) {
    var target = new URL(url, location.href);
    Object.keys(params).forEach(function (k) {
      target.searchParams.set(k, params[k]);
    });
    return target.toString();
  }

  function mount(root) {
    if (root.getAttribute("data-kassa-mounted")) return;
    root.setAttribute("data-kassa-mounted", "1");
    addStyle();
    var id = root.getAttribute("data-kassa-widget");
    var n = ++counter;
    var token = randomToken();
    var widgetPath = "/widgets/" + encodeURIComponent(id);

    var form = el("form", { class: "kassa-widget", novalidate: "", "aria-busy": "true", "aria-label": "Payment" });
    var message = el("p", { class: "kassa-widget__message", role: "alert", "aria-live": "assertive", id: "kassa-message-" + n });
    var loading = el("p", { class: "kassa-widget__loading" }, "Loading the payment form…");
    form.appendChild(loading);
    form.appendChild(message);
    root.appendChild(form);

    var state = { stripe: null, elements: null, start: null, busy: false, product: 0, amountDisplay: "" };

    function show(text) {
      message.textContent = text || "";
    }

    post(widgetPath + "/payment-intent", { token: token })
      .then(function (start) {
        state.start = start;
        if (!start.publishable_key) throw new Error("This shop cannot take payments yet (no publishable key).");
        return loadStripe(start.stripe_js).then(function (Stripe) {
          return build(Stripe, start);
        });
      })
      .catch(function (error) {
        loading.remove();
        form.setAttribute("aria-busy", "false");
        show(error.message);
      });

    function build(Stripe, start) {
      var widget = start.widget;
      loading.remove();
      var payLabel = function (display) {
        return "Pay " + display;
      };
      if (!root.getAttribute("data-kassa-standalone")) {
        form.insertBefore(el("p", { class: "kassa-widget__description" }, widget.description), message);
      }
      var button = el("button", { type: "submit", class: "kassa-widget__pay", id: "kassa-pay-" + n });
      if (widget.products && widget.products.length) {
        var fieldset = el("fieldset", { class: "kassa-widget__products" });
        fieldset.appendChild(el("legend", {}, "Choose"));
        widget.products.forEach(function (p, i) {
          var inputId = "kassa-product-" + n + "-" + i;
          var row = el("div", { class: "kassa-widget__choice" });
          var input = el("input", { type: "radio", name: "kassa-product-" + n, id: inputId, value: String(i) });
          if (i === 0) input.checked = true;
          input.addEventListener("change", function () {
            state.product = i;
            button.textContent = payLabel(p.amount_display);
          });
          row.appendChild(input);
          row.appendChild(el("label", { for: inputId }, p.name + " — " + p.amount_display));
          fieldset.appendChild(row);
        });
        form.insertBefore(fieldset, message);
        button.textContent = payLabel(widget.products[0].amount_display);
      } else {
        form.insertBefore(el("p", { class: "kassa-widget__amount" }, widget.amount_display), message);
        button.textContent = payLabel(widget.amount_display);
      }
      var email = null;
      if (widget.collect_email) {
        var field = el("div", { class: "kassa-widget__field" });
        var emailId = "kassa-email-" + n;
        field.appendChild(el("label", { for: emailId }, "E-mail for your receipt"));
        email = el("input", { type: "email", id: emailId, name: "email", autocomplete: "email", required: "", "aria-describedby": message.id });
        field.appendChild(email);
        form.insertBefore(field, message);
      }
      var card = el("div", { class: "kassa-widget__card", id: "kassa-card-" + n });
      form.insertBefore(card, message);
      form.appendChild(button);

      state.stripe = Stripe(start.publishable_key);
      state.elements = state.stripe.elements({ clientSecret: start.client_secret, appearance: appearance(root) });
      state.elements.create("payment").mount(card);
      form.setAttribute("aria-busy", "false");

      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (state.busy) return;
        show("");
        if (email && !email.value.trim()) {
          show("Please enter your e-mail address.");
          email.setAttribute("aria-invalid", "true");
          email.focus();
          return;
        }
        if (email) email.removeAttribute("aria-invalid");
        var label = button.textContent;
        state.busy = true;
        button.disabled = true;
        button.textContent = "Processing…";
        form.setAttribute("aria-busy", "true");
        var done = function (text) {
          state.busy = false;
          button.disabled = false;
          button.textContent = label;
          form.setAttribute("aria-busy", "false");
          show(text);
        };
        state.elements
          .submit()
          .then(function (checked) {
            if (checked && checked.error) throw checked.error;
            return post(widgetPath + "/payment-intents/" + encodeURIComponent(start.payment_intent) + "/details", {
              client_secret: start.client_secret,
              email: email ? email.value.trim() : null,
              product: widget.products && widget.products.length ? state.product : null,
            });
          })
          .then(function () {
            return state.elements.fetchUpdates ? state.elements.fetchUpdates() : null;
          })
          .then(function () {
            return state.stripe.confirmPayment({
              elements: state.elements,
              confirmParams: { return_url: start.return_url },
              redirect: "if_required",
            });
          })
          .then(function (result) {
            if (result.error) throw result.error;
            var intent = result.paymentIntent;
            if (intent.status !== "succeeded" && intent.status !== "processing") {
              throw new Error("The payment was not completed (" + intent.status + "). Please try again.");
            }
            // Recorded once, whoever is first (this call, the success page or Stripe's webhook).
            return post("/api/payment-intents/" + encodeURIComponent(intent.id) + "/confirmation", {
              client_secret: start.client_secret,
              livemode: start.livemode,
            })
              .catch(function () {
                return null;
              })
              .then(function () {
                root.setAttribute("data-kassa-status", "paid");
                location.assign(
                  withParams(start.return_url, {
                    payment_intent: intent.id,
                    payment_intent_client_secret: start.client_secret,
                    redirect_status: "succeeded",
                  })
                );
              });
          })
          .catch(function (error) {
            // Stripe's own words for a decline or a failed authentication; the customer may try
            // another card on the same PaymentIntent.
            done((error && error.message) || "The payment failed. Please try again.");
            root.setAttribute("data-kassa-status", "failed");
          });
      });
    }
  }

  function mountAll() {
    var nodes = document.querySelectorAll("[data-kassa-widget]");
    Array.prototype.forEach.call(nodes, mount);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountAll);
  } else {
    mountAll();
  }
  window.KassaWidget = { mount: mount, mountAll: mountAll };
})();
