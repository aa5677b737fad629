-- Settings Kassa keeps for itself (Stripe keys, webhook secrets, the SMTP URL, the admin token),
-- each sealed with XChaCha20-Poly1305 under the master key (KASSA_MASTER_KEY): `sealed` is the
-- ciphertext with its tag, `nonce` the value's own random 24-byte nonce, and the setting's name
-- is the associated data, so a sealed value copied into another row does not open. No plaintext
-- is ever stored. An environment variable of the same name overrides the stored value.
CREATE TABLE settings (
    name    text        PRIMARY KEY CHECK (name ~ '^KASSA_[A-Z_]+$'),
    -- 'test' or 'live' for a Stripe key or secret whose value says its mode; NULL otherwise.
    mode    text        CHECK (mode IN ('test', 'live')),
    sealed  bytea       NOT NULL,
    nonce   bytea       NOT NULL CHECK (octet_length(nonce) = 24),
    set_at  timestamptz NOT NULL DEFAULT now()
);
