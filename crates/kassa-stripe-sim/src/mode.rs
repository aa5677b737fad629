//! Test mode and live mode: one simulated account, two separate sets of objects.
//!
//! Stripe (docs: API keys, "Test mode and live mode"): every request is made in one mode, chosen by
//! the key (`sk_test_`/`rk_test_`/`pk_test_` or `sk_live_`/`rk_live_`/`pk_live_`); "objects in one
//! mode aren't accessible to the other" and each carries `livemode`. Webhook endpoints belong to a
//! mode and sign with their own secret. The simulator keeps one [`crate::state::Store`] per mode.

use serde::{Deserialize, Serialize};

/// The mode a request, an object or a webhook endpoint belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Test mode (a sandbox): `*_test_` keys, `livemode: false`.
    #[default]
    Test,
    /// Live mode: `*_live_` keys, `livemode: true`.
    Live,
}

impl Mode {
    /// Both modes, test first.
    pub const ALL: [Mode; 2] = [Mode::Test, Mode::Live];

    /// The `livemode` field of objects and events of this mode.
    pub fn livemode(self) -> bool {
        self == Mode::Live
    }

    /// `test` or `live`, as in key prefixes and `cs_test_`/`cs_live_` ids.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }

    /// The other mode.
    pub fn other(self) -> Mode {
        match self {
            Mode::Test => Mode::Live,
            Mode::Live => Mode::Test,
        }
    }

    /// `test` or `live` (case-insensitive), as the `/_sim/` controls take it.
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "test" => Some(Mode::Test),
            "live" => Some(Mode::Live),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
