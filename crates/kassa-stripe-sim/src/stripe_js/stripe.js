/*
 * The Kassa Stripe simulator's stand-in for Stripe.js (https://js.stripe.com/v3), served at /v3.
 *
 * It implements the subset of Stripe.js a payment form needs, with Stripe.js's names and promise
 * results, against the simulator that served it (the script's own origin):
 *   Stripe(publishableKey)
 *   stripe.elements({clientSecret, appearance})      -> elements
 *   elements.create('payment', options).mount(selector | element)
 *   elements.submit(), elements.update({appearance}), elements.getElement('payment')
 *   element.on('ready' | 'change' | 'focus' | 'blur', handler), element.focus(), .clear(), .unmount()
 *   stripe.confirmPayment({elements, clientSecret?, confirmParams: {return_url, ...}, redirect})
 *   stripe.confirmSetup({elements, clientSecret?, confirmParams: {return_url, ...}, redirect})
 *   stripe.retrievePaymentIntent(clientSecret), stripe.retrieveSetupIntent(clientSecret)
 * Results are {paymentIntent} / {setupIntent} or {error}, the error shaped like Stripe's (type,
 * code, decline_code, message, param, payment_intent / setup_intent). The Payment Element is a
 * card form (number, expiry, security code) rendered inside the mount point — not in an iframe — with
 * labels, autocomplete hints and error messages a screen reader announces. docs/SIMULATOR.md has the
 * contract. No framework, no build step.
 */
(function (global) {
  "use strict";

  var script = document.currentScript;
  var API = script && script.src ? new URL(script.src, global.location.href).origin : global.location.origin;
  var nextId = 0;
  var styled = false;

  function integrationError(message) {
    var e = new Error(message);
    e.name = "IntegrationError";
    return e;
  }

  // Stripe's bracket encoding: card[number]=…, payment_method_data[billing_details][name]=…
  function encode(params, prefix, out) {
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v === undefined || v === null) {
        return;
      }
      var name = prefix ? prefix + "[" + k + "]" : k;
      if (typeof v === "object") {
        encode(v, name, out);
      } else {
        out.push(encodeURIComponent(name) + "=" + encodeURIComponent(String(v)));
      }
    });
    return out;
  }

  // Like Stripe.js, the publishable key travels as the `key` parameter and bodies are form-encoded,
  // so every call is a CORS "simple request" (no preflight).
  function request(key, method, path, params) {
    var query = encode(Object.assign({ key: key }, params || {}), "", []).join("&");
    var url = API + "/v1" + path;
    var init = { method: method };
    if (method === "GET") {
      url += "?" + query;
    } else {
      init.headers = { "Content-Type": "application/x-www-form-urlencoded" };
      init.body = query;
    }
    return fetch(url, init).then(
      function (r) {
        return r.json().then(function (body) {
          return body;
        });
      },
      function () {
        return {
          error: {
            type: "api_connection_error",
            message: "We could not connect to Stripe. Check your network connection and try again."
          }
        };
      }
    );
  }

  function parseSecret(secret, method) {
    var m = /^((pi|seti)_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+$/.exec(secret || "");
    if (!m) {
      throw integrationError(
        "Invalid value for " + method + ": clientSecret should be a client secret of the form ${id}_secret_${secret}. You specified: " + secret + "."
      );
    }
    return { id: m[1], kind: m[2] === "pi" ? "payment_intent" : "setup_intent" };
  }

  // --- the card form ---------------------------------------------------------------------------------

  var CSS = [
    ".ksim-pe{font-family:var(--ksim-font-family,inherit);color:var(--ksim-color-text,inherit);font-size:var(--ksim-font-size,1rem)}",
    ".ksim-pe fieldset{border:0;margin:0;padding:0;min-width:0}",
    ".ksim-pe legend{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    ".ksim-pe .ksim-field{margin:0 0 calc(var(--ksim-spacing-unit,4px)*3)}",
    ".ksim-pe .ksim-row{display:flex;flex-wrap:wrap;gap:calc(var(--ksim-spacing-unit,4px)*3)}",
    ".ksim-pe .ksim-row>.ksim-field{flex:1 1 7rem}",
    ".ksim-pe label{display:block;margin:0 0 var(--ksim-spacing-unit,4px)}",
    ".ksim-pe input{display:block;width:100%;box-sizing:border-box;min-height:44px;font:inherit;color:inherit;" +
      "padding:calc(var(--ksim-spacing-unit,4px)*2.5);background:var(--ksim-color-background,#fff);" +
      "border:1px solid var(--ksim-color-border,#767676);border-radius:var(--ksim-border-radius,6px)}",
    ".ksim-pe input:focus{outline:2px solid var(--ksim-color-primary,#0570de);outline-offset:1px}",
    ".ksim-pe input[aria-invalid=true]{border-color:var(--ksim-color-danger,#df1b41)}",
    ".ksim-pe .ksim-error{color:var(--ksim-color-danger,#df1b41);margin:var(--ksim-spacing-unit,4px) 0 0;font-size:.9em}",
    ".ksim-pe .ksim-error:empty{display:none}",
    ".ksim-3ds{position:fixed;inset:0;background:rgba(0,0,0,.55);display:flex;align-items:center;justify-content:center;z-index:2147483647}",
    ".ksim-3ds iframe{width:min(30rem,100vw);height:min(34rem,100vh);border:0;border-radius:8px;background:#fff}"
  ].join("\n");

  function ensureStyles() {
    if (styled) {
      return;
    }
    styled = true;
    var style = document.createElement("style");
    style.setAttribute("data-kassa-sim", "stripe-js");
    style.textContent = CSS;
    document.head.appendChild(style);
  }

  // Stripe's Appearance API variables this form honours, and the CSS variables they set.
  var APPEARANCE = {
    colorPrimary: "--ksim-color-primary",
    colorBackground: "--ksim-color-background",
    colorText: "--ksim-color-text",
    colorDanger: "--ksim-color-danger",
    fontFamily: "--ksim-font-family",
    fontSizeBase: "--ksim-font-size",
    spacingUnit: "--ksim-spacing-unit",
    borderRadius: "--ksim-border-radius",
    colorBorder: "--ksim-color-border"
  };
  var THEMES = {
    night: { colorBackground: "#30313d", colorText: "#ffffff", colorBorder: "#6b6c7e" },
    flat: { borderRadius: "4px" },
    stripe: {}
  };

  function digits(s) {
    return (s || "").replace(/\D/g, "");
  }

  function luhn(number) {
    var sum = 0;
    for (var i = 0; i < number.length; i++) {
      var d = +number[number.length - 1 - i];
      if (i % 2 === 1) {
        d *= 2;
        if (d > 9) {
          d -= 9;
        }
      }
      sum += d;
    }
    return sum % 10 === 0;
  }

  function cardLength(number) {
    if (/^3[47]/.test(number)) {
      return 15;
    }
    if (/^3(0|6|8)/.test(number)) {
      return 14;
    }
    return 16;
  }

  function groups(number) {
    var sizes = /^3[47]/.test(number) ? [4, 6, 5] : [4, 4, 4, 4, 3];
    var out = [];
    var at = 0;
    for (var i = 0; i < sizes.length && at < number.length; i++) {
      out.push(number.slice(at, at + sizes[i]));
      at += sizes[i];
    }
    return out.join(" ");
  }

  function validationError(code, message) {
    return { type: "validation_error", code: code, message: message };
  }

  function PaymentElement(elements, options) {
    this._elements = elements;
    this._options = options || {};
    this._handlers = {};
    this._root = null;
    this._uid = "ksim-" + ++nextId;
  }

  PaymentElement.prototype.on = function (event, handler) {
    (this._handlers[event] = this._handlers[event] || []).push(handler);
    return this;
  };

  PaymentElement.prototype.off = function (event, handler) {
    this._handlers[event] = (this._handlers[event] || []).filter(function (h) {
      return h !== handler;
    });
    return this;
  };

  PaymentElement.prototype._emit = function (event, payload) {
    (this._handlers[event] || []).forEach(function (h) {
      h(Object.assign({ elementType: "payment" }, payload || {}));
    });
  };

  PaymentElement.prototype._field = function (fieldset, name, label, attrs) {
    var wrap = document.createElement("div");
    wrap.className = "ksim-field";
    var id = this._uid + "-" + name;
    var l = document.createElement("label");
    l.htmlFor = id;
    l.textContent = label;
    var input = document.createElement("input");
    input.id = id;
    input.type = "text";
    input.setAttribute("inputmode", "numeric");
    input.setAttribute("spellcheck", "false");
    input.setAttribute("aria-invalid", "false");
    input.setAttribute("aria-describedby", id + "-error");
    Object.keys(attrs).forEach(function (k) {
      input.setAttribute(k, attrs[k]);
    });
    var error = document.createElement("p");
    error.id = id + "-error";
    error.className = "ksim-error";
    error.setAttribute("aria-live", "polite");
    wrap.appendChild(l);
    wrap.appendChild(input);
    wrap.appendChild(error);
    fieldset.appendChild(wrap);
    return { input: input, error: error };
  };

  PaymentElement.prototype.mount = function (target) {
    var host = typeof target === "string" ? document.querySelector(target) : target;
    if (!host || !host.appendChild) {
      throw integrationError("The selector you specified (" + target + ") applies to no DOM elements that are currently on the page.");
    }
    if (this._root) {
      throw integrationError("This Element is already mounted. Use `unmount` to unmount the Element before re-mounting.");
    }
    ensureStyles();
    var self = this;
    var root = document.createElement("div");
    root.className = "ksim-pe";
    root.setAttribute("data-kassa-sim-element", "payment");
    var fieldset = document.createElement("fieldset");
    var legend = document.createElement("legend");
    legend.textContent = "Card details";
    fieldset.appendChild(legend);
    this._number = this._field(fieldset, "number", "Card number", {
      name: "cardnumber",
      autocomplete: "cc-number",
      placeholder: "1234 1234 1234 1234",
      maxlength: "23"
    });
    var row = document.createElement("div");
    row.className = "ksim-row";
    fieldset.appendChild(row);
    this._expiry = this._field(row, "expiry", "Expiration date (MM / YY)", {
      name: "exp-date",
      autocomplete: "cc-exp",
      placeholder: "MM / YY",
      maxlength: "9"
    });
    this._cvc = this._field(row, "cvc", "Security code", {
      name: "cvc",
      autocomplete: "cc-csc",
      placeholder: "CVC",
      maxlength: "4"
    });
    root.appendChild(fieldset);
    host.appendChild(root);
    this._root = root;
    this._applyAppearance();

    this._number.input.addEventListener("input", function () {
      var input = self._number.input;
      if (input.selectionStart === input.value.length) {
        input.value = groups(digits(input.value).slice(0, 19));
      }
      self._changed();
    });
    this._expiry.input.addEventListener("input", function (e) {
      var input = self._expiry.input;
      var d = digits(input.value);
      if (e.inputType !== "deleteContentBackward" && input.selectionStart === input.value.length && d.length >= 2) {
        input.value = d.slice(0, 2) + " / " + d.slice(2, 4);
      }
      self._changed();
    });
    this._cvc.input.addEventListener("input", function () {
      self._changed();
    });
    [this._number, this._expiry, this._cvc].forEach(function (f) {
      f.input.addEventListener("focus", function () {
        self._emit("focus");
      });
      f.input.addEventListener("blur", function () {
        if (f.input.value) {
          self._show(f, self._check(f));
        }
        self._emit("blur");
      });
    });
    setTimeout(function () {
      self._emit("ready");
    }, 0);
    return this;
  };

  PaymentElement.prototype._applyAppearance = function () {
    if (!this._root) {
      return;
    }
    var appearance = this._elements._options.appearance || {};
    var vars = Object.assign({}, THEMES[appearance.theme] || {}, appearance.variables || {});
    var style = this._root.style;
    Object.keys(APPEARANCE).forEach(function (name) {
      if (vars[name] !== undefined) {
        style.setProperty(APPEARANCE[name], String(vars[name]));
      }
    });
  };

  PaymentElement.prototype._check = function (f) {
    if (f === this._number) {
      var n = digits(this._number.input.value);
      if (!n || n.length < cardLength(n)) {
        return validationError("incomplete_number", "Your card number is incomplete.");
      }
      if (n.length > cardLength(n) || !luhn(n)) {
        return validationError("invalid_number", "Your card number is invalid.");
      }
      return null;
    }
    if (f === this._expiry) {
      var e = this._expiryParts();
      if (!e) {
        return validationError("incomplete_expiry", "Your card's expiration date is incomplete.");
      }
      if (e.month < 1 || e.month > 12) {
        return validationError("invalid_expiry_month", "Your card's expiration date is invalid.");
      }
      var now = new Date();
      if (e.year < now.getFullYear()) {
        return validationError("invalid_expiry_year_past", "Your card's expiration year is in the past.");
      }
      if (e.year === now.getFullYear() && e.month < now.getMonth() + 1) {
        return validationError("invalid_expiry_month_past", "Your card's expiration date is in the past.");
      }
      return null;
    }
    var cvc = digits(this._cvc.input.value);
    var wanted = /^3[47]/.test(digits(this._number.input.value)) ? 4 : 3;
    if (cvc.length < wanted) {
      return validationError("incomplete_cvc", "Your card's security code is incomplete.");
    }
    return null;
  };

  PaymentElement.prototype._expiryParts = function () {
    var d = digits(this._expiry.input.value);
    if (d.length === 4) {
      return { month: +d.slice(0, 2), year: 2000 + +d.slice(2) };
    }
    if (d.length === 6) {
      return { month: +d.slice(0, 2), year: +d.slice(2) };
    }
    return null;
  };

  PaymentElement.prototype._show = function (f, error) {
    f.error.textContent = error ? error.message : "";
    f.input.setAttribute("aria-invalid", error ? "true" : "false");
  };

  PaymentElement.prototype._changed = function () {
    var self = this;
    var fields = [this._number, this._expiry, this._cvc];
    fields.forEach(function (f) {
      // An error shown earlier goes away once the field is right.
      if (f.input.getAttribute("aria-invalid") === "true" && !self._check(f)) {
        self._show(f, null);
      }
    });
    this._emit("change", {
      empty: fields.every(function (f) {
        return !f.input.value;
      }),
      complete: fields.every(function (f) {
        return !self._check(f);
      }),
      collapsed: false,
      value: { type: "card" }
    });
  };

  // Checks every field, shows each one's error, focuses the first wrong one; the first error or null.
  PaymentElement.prototype._validate = function () {
    var self = this;
    var first = null;
    [this._number, this._expiry, this._cvc].forEach(function (f) {
      var error = self._check(f);
      self._show(f, error);
      if (error && !first) {
        first = error;
        f.input.focus();
      }
    });
    return first;
  };

  PaymentElement.prototype._paymentMethodData = function (extra) {
    var e = this._expiryParts();
    return Object.assign({}, extra || {}, {
      type: "card",
      card: {
        number: digits(this._number.input.value),
        exp_month: e ? e.month : "",
        exp_year: e ? e.year : "",
        cvc: digits(this._cvc.input.value)
      }
    });
  };

  PaymentElement.prototype._setBusy = function (busy) {
    [this._number, this._expiry, this._cvc].forEach(function (f) {
      f.input.readOnly = busy;
    });
  };

  PaymentElement.prototype.focus = function () {
    if (this._number) {
      this._number.input.focus();
    }
  };

  PaymentElement.prototype.blur = function () {
    if (document.activeElement && this._root && this._root.contains(document.activeElement)) {
      document.activeElement.blur();
    }
  };

  PaymentElement.prototype.clear = function () {
    var self = this;
    [this._number, this._expiry, this._cvc].forEach(function (f) {
      f.input.value = "";
      self._show(f, null);
    });
    this._changed();
  };

  PaymentElement.prototype.update = function (options) {
    Object.assign(this._options, options || {});
  };

  PaymentElement.prototype.unmount = function () {
    if (this._root && this._root.parentNode) {
      this._root.parentNode.removeChild(this._root);
    }
    this._root = null;
  };

  PaymentElement.prototype.destroy = function () {
    this.unmount();
    this._elements._elements.payment = null;
  };

  function Elements(stripe, options) {
    this._stripe = stripe;
    this._options = Object.assign({}, options || {});
    this._elements = {};
  }

  Elements.prototype.create = function (type, options) {
    if (type !== "payment") {
      throw integrationError("The simulator's Stripe.js creates the 'payment' Element only, not '" + type + "'.");
    }
    if (this._elements.payment) {
      throw integrationError("Can only create one Element of type payment.");
    }
    this._elements.payment = new PaymentElement(this, options);
    return this._elements.payment;
  };

  Elements.prototype.getElement = function (type) {
    return this._elements[type] || null;
  };

  Elements.prototype.update = function (options) {
    Object.assign(this._options, options || {});
    if (this._elements.payment) {
      this._elements.payment._applyAppearance();
    }
  };

  Elements.prototype.fetchUpdates = function () {
    return Promise.resolve({});
  };

  Elements.prototype.submit = function () {
    var element = this._elements.payment;
    var error = element ? element._validate() : validationError("incomplete", "No Payment Element is mounted.");
    return Promise.resolve(error ? { error: error } : {});
  };

  // --- 3-D Secure --------------------------------------------------------------------------------

  // Opens the challenge page in a modal frame; resolves once the customer answered there.
  function challenge(url, intentId) {
    return new Promise(function (resolve) {
      ensureStyles();
      var before = document.activeElement;
      var overlay = document.createElement("div");
      overlay.className = "ksim-3ds";
      overlay.setAttribute("role", "dialog");
      overlay.setAttribute("aria-modal", "true");
      overlay.setAttribute("aria-label", "3D Secure authentication");
      var frame = document.createElement("iframe");
      frame.src = url;
      frame.title = "3D Secure authentication";
      frame.name = "ksim-3ds-" + intentId;
      overlay.appendChild(frame);
      function done(e) {
        if (e.origin !== API || !e.data || e.data.type !== "kassa-sim-3ds" || e.data.intent !== intentId) {
          return;
        }
        global.removeEventListener("message", done);
        document.removeEventListener("keydown", escape);
        overlay.parentNode.removeChild(overlay);
        if (before && before.focus) {
          before.focus();
        }
        resolve(e.data);
      }
      function escape(e) {
        if (e.key === "Escape" && frame.contentWindow) {
          frame.contentWindow.postMessage({ type: "kassa-sim-3ds-cancel" }, API);
        }
      }
      global.addEventListener("message", done);
      document.addEventListener("keydown", escape);
      document.body.appendChild(overlay);
      frame.addEventListener("load", function () {
        frame.focus();
      });
    });
  }

  // --- Stripe ---------------------------------------------------------------------------------------

  var CUSTOMER_MESSAGES = {
    payment_intent_authentication_failure:
      "We are unable to authenticate your payment method. Please choose a different payment method and try again.",
    setup_intent_authentication_failure:
      "We are unable to authenticate your payment method. Please choose a different payment method and try again."
  };

  function StripeClient(key, options) {
    this._key = key;
    this._options = options || {};
  }

  StripeClient.prototype.elements = function (options) {
    return new Elements(this, options);
  };

  StripeClient.prototype._intentPath = function (secret, method) {
    var parsed = parseSecret(secret, method);
    return { id: parsed.id, kind: parsed.kind, path: parsed.kind === "payment_intent" ? "/payment_intents/" + parsed.id : "/setup_intents/" + parsed.id };
  };

  StripeClient.prototype._retrieve = function (secret, method) {
    var self = this;
    var target;
    try {
      target = this._intentPath(secret, method);
    } catch (e) {
      return Promise.reject(e);
    }
    return request(this._key, "GET", target.path, { client_secret: secret }).then(function (body) {
      return self._result(target.kind, body, false);
    });
  };

  StripeClient.prototype.retrievePaymentIntent = function (clientSecret) {
    return this._retrieve(clientSecret, "stripe.retrievePaymentIntent");
  };

  StripeClient.prototype.retrieveSetupIntent = function (clientSecret) {
    return this._retrieve(clientSecret, "stripe.retrieveSetupIntent");
  };

  // {paymentIntent} / {setupIntent}, or {error}: an API error as Stripe answered it, or the intent's
  // last error once a confirmation ended back in requires_payment_method.
  StripeClient.prototype._result = function (kind, body, confirming) {
    if (body.error) {
      return { error: body.error };
    }
    var name = kind === "payment_intent" ? "paymentIntent" : "setupIntent";
    var last = kind === "payment_intent" ? body.last_payment_error : body.last_setup_error;
    if (confirming && body.status === "requires_payment_method" && last) {
      var error = Object.assign({}, last);
      error[kind] = body;
      if (CUSTOMER_MESSAGES[error.code]) {
        // Stripe.js tells the customer this one in its own words, not the API's.
        error.message = CUSTOMER_MESSAGES[error.code];
      }
      return { error: error };
    }
    var out = {};
    out[name] = body;
    return out;
  };

  StripeClient.prototype._confirm = function (kind, method, options) {
    var self = this;
    options = options || {};
    var elements = options.elements;
    var secret = options.clientSecret || (elements && elements._options.clientSecret);
    var target;
    try {
      target = this._intentPath(secret, method);
    } catch (e) {
      return Promise.reject(e);
    }
    if (target.kind !== kind) {
      return Promise.reject(integrationError(method + " needs the client secret of a " + kind + "."));
    }
    var redirect = options.redirect || "always";
    var confirmParams = options.confirmParams || {};
    if (redirect !== "if_required" && !confirmParams.return_url) {
      return Promise.reject(
        integrationError(method + ": the `confirmParams.return_url` argument is required unless passing `redirect: 'if_required'`")
      );
    }
    var element = elements && elements.getElement("payment");
    var params = Object.assign({}, confirmParams, { client_secret: secret, use_stripe_sdk: "true" });
    delete params.payment_method_data;
    if (element) {
      var invalid = element._validate();
      if (invalid) {
        return Promise.resolve({ error: invalid });
      }
      params.payment_method_data = element._paymentMethodData(confirmParams.payment_method_data);
    } else if (!confirmParams.payment_method) {
      return Promise.reject(integrationError(method + ": pass `elements` with a mounted Payment Element, or `confirmParams.payment_method`."));
    }
    if (element) {
      element._setBusy(true);
    }
    var finish = function (result) {
      if (element) {
        element._setBusy(false);
      }
      return result;
    };
    return request(this._key, "POST", target.path + "/confirm", params)
      .then(function (body) {
        var action = body && !body.error && body.status === "requires_action" && body.next_action;
        if (action && action.type === "use_stripe_sdk" && action.use_stripe_sdk && action.use_stripe_sdk.stripe_js) {
          var url = action.use_stripe_sdk.stripe_js + "?client_secret=" + encodeURIComponent(secret);
          return challenge(url, target.id).then(function () {
            return request(self._key, "GET", target.path, { client_secret: secret });
          });
        }
        return body;
      })
      .then(function (body) {
        var result = self._result(kind, body, true);
        if (!result.error && redirect !== "if_required") {
          var intent = result.paymentIntent || result.setupIntent;
          var back = new URL(confirmParams.return_url, global.location.href);
          back.searchParams.set(kind, intent.id);
          back.searchParams.set(kind + "_client_secret", secret);
          back.searchParams.set("redirect_status", intent.status === "processing" ? "processing" : "succeeded");
          global.location.assign(back.toString());
          // As Stripe.js: the promise does not settle when the page goes away.
          return new Promise(function () {});
        }
        return result;
      })
      .then(finish, function (e) {
        finish();
        throw e;
      });
  };

  StripeClient.prototype.confirmPayment = function (options) {
    return this._confirm("payment_intent", "stripe.confirmPayment()", options);
  };

  StripeClient.prototype.confirmSetup = function (options) {
    return this._confirm("setup_intent", "stripe.confirmSetup()", options);
  };

  function Stripe(key, options) {
    if (typeof key !== "string" || !key) {
      throw integrationError("Please call Stripe() with your publishable key. You used an empty string.");
    }
    if (/^(sk|rk)_/.test(key)) {
      throw integrationError("You should not use your secret key with Stripe.js. Please pass a publishable key instead.");
    }
    if (!/^pk_(test|live)_/.test(key)) {
      throw integrationError("Invalid API Key provided: " + key.slice(0, 8) + "…");
    }
    return new StripeClient(key, options);
  }

  Stripe.version = 3;
  Stripe.kassaSimulator = { api: API };
  global.Stripe = Stripe;
})(window);
