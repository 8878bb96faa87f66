//! `[admin]` and `[console]`: the admin listener and the tokens of the
//! console it serves.

use secrecy::{ExposeSecret, SecretString};

use super::reader::{ConfigError, Section};
use super::runtime::positive;
use crate::listener::ListenerSettings;

/// `[admin]`: the admin listener (`--admin-listen` overrides `listen`).
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    pub listen: Option<std::net::SocketAddr>,
    pub limits: ListenerSettings,
}

pub(super) fn admin(a: &Section) -> Result<AdminSettings, ConfigError> {
    let listen = match a.opt_str("listen")? {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            a.error(
                "listen",
                format!("`{text}` is not an address such as \"127.0.0.1:9090\""),
            )
        })?),
    };
    let d = ListenerSettings::default();
    let limits = ListenerSettings {
        max_connections: a.int_or("max_connections", d.max_connections as i64, 1, 100_000)?
            as usize,
        header_timeout: positive(a, "header_timeout", d.header_timeout)?,
        request_timeout: positive(a, "request_timeout", d.request_timeout)?,
    };
    a.finish()?;
    Ok(AdminSettings { listen, limits })
}

/// `[console]`: the tokens of the console's two roles. With neither, the
/// console is off (its paths answer 404); each token is a secret (`${VAR}`),
/// at least [`super::MIN_SECRET_CHARS`] long, and the two must differ (else an
/// operator action could not be told from a viewer's).
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    pub viewer_token: Option<SecretString>,
    pub operator_token: Option<SecretString>,
}

impl ConsoleSettings {
    pub fn enabled(&self) -> bool {
        self.viewer_token.is_some() || self.operator_token.is_some()
    }
}

/// The shortest console token accepted: long enough that guessing one over
/// the network is hopeless.
pub const MIN_CONSOLE_TOKEN_CHARS: usize = 16;

pub(super) fn console(c: &Section) -> Result<ConsoleSettings, ConfigError> {
    let token = |key: &str| -> Result<Option<SecretString>, ConfigError> {
        match c.opt_str(key)? {
            None => Ok(None),
            Some(_) => c.secret(key).map(Some),
        }
    };
    let settings = ConsoleSettings {
        viewer_token: token("viewer_token")?,
        operator_token: token("operator_token")?,
    };
    c.finish()?;
    c.check_secrets()?;
    // A token is a password anyone who reaches the admin listener can try.
    for (key, token) in [
        ("viewer_token", &settings.viewer_token),
        ("operator_token", &settings.operator_token),
    ] {
        if let Some(token) = token {
            let len = token.expose_secret().chars().count();
            if len < MIN_CONSOLE_TOKEN_CHARS {
                return Err(c.error(
                    key,
                    format!("is {len} characters long; a console token must have at least {MIN_CONSOLE_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)"),
                ));
            }
        }
    }
    if let (Some(v), Some(o)) = (&settings.viewer_token, &settings.operator_token) {
        if v.expose_secret() == o.expose_secret() {
            return Err(c.error(
                "operator_token",
                "must differ from viewer_token (the same token cannot be both roles)",
            ));
        }
    }
    Ok(settings)
}
