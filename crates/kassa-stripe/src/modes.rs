//! Test and live side by side: one [`Client`] per configured mode, and the mode a call uses when
//! it names none. An object, an event or a request is always served by the client of its own
//! mode; a mode with no key is an error ([`ModeNotConfigured`]), never the other mode's client.

use crate::{Client, Mode};

/// A mode that has no Stripe key in this deployment. Never carries a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} mode is not configured: this deployment has no {0} Stripe key (KASSA_STRIPE_{upper}_SECRET_KEY)", upper = upper(.0))]
pub struct ModeNotConfigured(pub Mode);

fn upper(mode: &Mode) -> &'static str {
    match mode {
        Mode::Test => "TEST",
        Mode::Live => "LIVE",
    }
}

/// Why a set of clients cannot serve a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModesError {
    /// No client at all.
    #[error("no Stripe key is configured (KASSA_STRIPE_TEST_SECRET_KEY, KASSA_STRIPE_LIVE_SECRET_KEY or KASSA_STRIPE_API_KEY)")]
    Empty,
    /// A client filed under the other mode (a `sk_live_` key given as the test key).
    #[error("the {filed} key is a {actual} key: test and live never mix")]
    WrongMode {
        /// The mode it was given for.
        filed: Mode,
        /// The mode its key is of.
        actual: Mode,
    },
    /// The default mode names a mode with no client.
    #[error("the default mode is {0} but {0} mode has no Stripe key (KASSA_DEFAULT_MODE)")]
    DefaultNotConfigured(Mode),
    /// Both modes are configured but no default was chosen.
    #[error("both test and live keys are configured: set KASSA_DEFAULT_MODE=test or live")]
    DefaultRequired,
}

/// The Stripe clients of a deployment: at most one per mode, at least one, and the default mode.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Modes {
    test: Option<Client>,
    live: Option<Client>,
    default: Mode,
}

impl Modes {
    /// Both modes' clients (either may be absent, not both) and the default mode: with one mode
    /// configured, `default` may be `None` (that mode is the default); with both, it is required.
    /// Each client's key must be of the mode it is filed under.
    pub fn new(
        test: Option<Client>,
        live: Option<Client>,
        default: Option<Mode>,
    ) -> Result<Self, ModesError> {
        for (filed, client) in [(Mode::Test, &test), (Mode::Live, &live)] {
            if let Some(client) = client {
                if client.mode() != filed {
                    return Err(ModesError::WrongMode {
                        filed,
                        actual: client.mode(),
                    });
                }
            }
        }
        let default = match (default, &test, &live) {
            (_, None, None) => return Err(ModesError::Empty),
            (Some(Mode::Test), None, _) => {
                return Err(ModesError::DefaultNotConfigured(Mode::Test))
            }
            (Some(Mode::Live), _, None) => {
                return Err(ModesError::DefaultNotConfigured(Mode::Live))
            }
            (Some(mode), _, _) => mode,
            (None, Some(_), None) => Mode::Test,
            (None, None, Some(_)) => Mode::Live,
            (None, Some(_), Some(_)) => return Err(ModesError::DefaultRequired),
        };
        Ok(Modes {
            test,
            live,
            default,
        })
    }

    /// One client, whose key's mode is the default: a single-mode deployment.
    pub fn single(client: Client) -> Self {
        let default = client.mode();
        let (test, live) = match default {
            Mode::Test => (Some(client), None),
            Mode::Live => (None, Some(client)),
        };
        Modes {
            test,
            live,
            default,
        }
    }

    /// The client of `mode`, or why there is none.
    pub fn client(&self, mode: Mode) -> Result<&Client, ModeNotConfigured> {
        match mode {
            Mode::Test => self.test.as_ref(),
            Mode::Live => self.live.as_ref(),
        }
        .ok_or(ModeNotConfigured(mode))
    }

    /// The client of an object's or event's `livemode`.
    pub fn for_livemode(&self, livemode: bool) -> Result<&Client, ModeNotConfigured> {
        self.client(Mode::from_livemode(livemode))
    }

    /// The client of `mode` when the caller named one, else of the default mode.
    pub fn resolve(&self, mode: Option<Mode>) -> Result<&Client, ModeNotConfigured> {
        self.client(mode.unwrap_or(self.default))
    }

    /// The mode a call that names none uses (`KASSA_DEFAULT_MODE`, or the only configured one).
    pub fn default_mode(&self) -> Mode {
        self.default
    }

    /// The default mode's client (always configured).
    pub fn default_client(&self) -> &Client {
        match self.client(self.default) {
            Ok(client) => client,
            // `new` and `single` only build a `Modes` whose default is configured.
            Err(_) => unreachable!("the default mode always has a client"),
        }
    }

    /// Whether `mode` has a client.
    pub fn has(&self, mode: Mode) -> bool {
        self.client(mode).is_ok()
    }

    /// The configured modes with their clients, test first.
    pub fn iter(&self) -> impl Iterator<Item = (Mode, &Client)> {
        [(Mode::Test, &self.test), (Mode::Live, &self.live)]
            .into_iter()
            .filter_map(|(mode, client)| client.as_ref().map(|c| (mode, c)))
    }
}

impl From<Client> for Modes {
    fn from(client: Client) -> Self {
        Modes::single(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientConfig;

    fn client(key: &str) -> Client {
        Client::new(ClientConfig::new(key.to_owned().into())).expect("client")
    }

    #[test]
    fn one_mode_is_its_own_default_and_the_other_is_not_configured() {
        let modes = Modes::single(client("sk_live_abc"));
        assert_eq!(modes.default_mode(), Mode::Live);
        assert!(modes.for_livemode(true).is_ok());
        assert_eq!(
            modes.for_livemode(false).unwrap_err(),
            ModeNotConfigured(Mode::Test)
        );
        assert_eq!(modes.resolve(None).unwrap().mode(), Mode::Live);
    }

    #[test]
    fn each_mode_gets_its_own_client() {
        let modes = Modes::new(
            Some(client("sk_test_abc")),
            Some(client("rk_live_abc")),
            Some(Mode::Test),
        )
        .unwrap();
        assert_eq!(modes.client(Mode::Test).unwrap().mode(), Mode::Test);
        assert_eq!(modes.client(Mode::Live).unwrap().mode(), Mode::Live);
        assert_eq!(modes.resolve(Some(Mode::Live)).unwrap().mode(), Mode::Live);
        assert_eq!(modes.default_client().mode(), Mode::Test);
        assert_eq!(modes.iter().count(), 2);
    }

    #[test]
    fn a_key_filed_under_the_wrong_mode_is_refused() {
        let e = Modes::new(Some(client("sk_live_abc")), None, None).unwrap_err();
        assert_eq!(
            e,
            ModesError::WrongMode {
                filed: Mode::Test,
                actual: Mode::Live
            }
        );
        assert!(e.to_string().contains("never mix"));
    }

    #[test]
    fn both_modes_need_a_default_and_it_must_be_configured() {
        let both = || (Some(client("sk_test_a")), Some(client("sk_live_a")));
        let (t, l) = both();
        assert_eq!(
            Modes::new(t, l, None).unwrap_err(),
            ModesError::DefaultRequired
        );
        assert_eq!(
            Modes::new(None, Some(client("sk_live_a")), Some(Mode::Test)).unwrap_err(),
            ModesError::DefaultNotConfigured(Mode::Test)
        );
        assert_eq!(Modes::new(None, None, None).unwrap_err(), ModesError::Empty);
    }
}
