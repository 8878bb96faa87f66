//! Who is asking, and whether they may: the two roles' tokens, the
//! sessions a login opens, and the cross-site check on every
//! state-changing request.
//!
//! - A token is compared in constant time with both configured tokens; it
//!   never leaves this module (not in a session, not in the audit, not in a
//!   log): a session is a fresh random id, and the cookie carries only that.
//! - Sessions live in this process's memory (at most [`MAX_SESSIONS`], each
//!   for [`SESSION_LIFETIME`]): a restart logs everyone out, which costs a
//!   login and keeps session ids out of the database. Behind a load
//!   balancer with several instances, pin the console to one instance (or
//!   use the bearer token).
//! - Cross-site forgery: a browser says where a request comes from
//!   (`Sec-Fetch-Site`, `Origin`); a state-changing request is refused when
//!   either says another site. A session cookie is also `SameSite=Strict`,
//!   so a cross-site request carries none; the header check is the second
//!   lock. A request that says nothing of its origin (a script with a bearer
//!   token) is not a browser's, and is let through on its token alone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::HeaderMap;
use rand::RngCore;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::config::ConsoleSettings;

/// The cookie that carries a session id.
pub const COOKIE: &str = "bw_console";
/// How long a session lasts after its login, whatever its use.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; the oldest goes when a login would pass this.
pub const MAX_SESSIONS: usize = 10_000;
/// The longest name a person may give at login (it goes into the audit).
pub const MAX_ACTOR_CHARS: usize = 64;

pub use crate::store::lifecycle::Role;

impl Role {
    pub fn may_act(self) -> bool {
        self == Role::Operator
    }
}

/// Who is asking: their role, and the name the audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub actor: String,
    /// Whether they came with a session cookie (a browser) rather than a token.
    pub session: bool,
}

struct Session {
    role: Role,
    actor: String,
    until: Instant,
}

pub struct Auth {
    settings: ConsoleSettings,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Auth {
    pub fn new(settings: ConsoleSettings) -> Auth {
        Auth {
            settings,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The role a token opens, compared in constant time with both tokens
    /// (both are always compared, so the time does not say which matched).
    pub fn role_of_token(&self, token: &str) -> Option<Role> {
        let matches = |configured: &Option<secrecy::SecretString>| {
            configured.as_ref().is_some_and(|t| {
                let t = t.expose_secret().as_bytes();
                bool::from(t.ct_eq(token.as_bytes()))
            })
        };
        let operator = matches(&self.settings.operator_token);
        let viewer = matches(&self.settings.viewer_token);
        if operator {
            Some(Role::Operator)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Opens a session for `role`; returns its id (the cookie's value).
    pub fn open_session(&self, role: Role, actor: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("not poisoned");
        sessions.retain(|_, s| s.until > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                role,
                actor: actor.to_string(),
                until: now + SESSION_LIFETIME,
            },
        );
        id
    }

    pub fn close_session(&self, id: &str) {
        self.sessions.lock().expect("not poisoned").remove(id);
    }

    /// Who the request comes from: a bearer token, else a live session.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        if let Some(token) = bearer(headers) {
            return self.role_of_token(token).map(|role| Caller {
                role,
                actor: format!("api ({} token)", role.as_str()),
                session: false,
            });
        }
        let id = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock().expect("not poisoned");
        let session = sessions.get(id.as_str())?;
        (session.until > Instant::now()).then(|| Caller {
            role: session.role,
            actor: session.actor.clone(),
            session: true,
        })
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A new random token (for `run --sandbox`, which has no configured one).
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The `Set-Cookie` value of a new session: not readable by scripts, sent
/// only with requests from the console's own pages, for its lifetime.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Why a state-changing request looks cross-site, if it does: a
/// `Sec-Fetch-Site` other than `same-origin` (or `none`, typed by the user),
/// or an `Origin` whose host is not the one the request was sent to.
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    if let Some(origin) = headers.get(hyper::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = url::Url::parse(origin).ok().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        });
        // `null` (a sandboxed frame, a redirect across sites) is another site.
        if host.is_empty() || origin_host.as_deref() != Some(host) {
            return Some("Origin is not this console".into());
        }
    }
    None
}

/// The name a person gave at login, made fit for the audit: trimmed, control
/// characters dropped, bounded; the role's name when empty.
pub fn actor_name(given: &str, role: Role) -> String {
    let name: String = given
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ACTOR_CHARS)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        role.as_str().to_string()
    } else {
        format!("{name} ({})", role.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn auth() -> Auth {
        Auth::new(ConsoleSettings {
            viewer_token: Some("viewer-token-1".to_string().into()),
            operator_token: Some("operator-token-1".to_string().into()),
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_open_their_role_and_nothing_else() {
        let a = auth();
        assert_eq!(a.role_of_token("viewer-token-1"), Some(Role::Viewer));
        assert_eq!(a.role_of_token("operator-token-1"), Some(Role::Operator));
        assert_eq!(a.role_of_token("operator-token-"), None);
        assert_eq!(a.role_of_token(""), None);
        let c = a
            .caller(&headers(&[("authorization", "Bearer operator-token-1")]))
            .unwrap();
        assert_eq!(c.role, Role::Operator);
        assert!(!c.actor.contains("operator-token-1"));
        assert!(a
            .caller(&headers(&[("authorization", "Basic operator-token-1")]))
            .is_none());
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_logout() {
        let a = auth();
        let id = a.open_session(Role::Viewer, "ann (viewer)");
        assert_eq!(id.len(), 64);
        let h = headers(&[("cookie", &format!("x=1; {COOKIE}={id}; y=2"))]);
        let c = a.caller(&h).unwrap();
        assert_eq!(
            (c.role, c.actor.as_str(), c.session),
            (Role::Viewer, "ann (viewer)", true)
        );
        a.close_session(&id);
        assert!(a.caller(&h).is_none());
        assert!(a
            .caller(&headers(&[("cookie", &format!("{COOKIE}=deadbeef"))]))
            .is_none());
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let same = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&same), None);
        assert_eq!(cross_site(&headers(&[("host", "h:1")])), None, "a script");
        assert!(cross_site(&headers(&[
            ("host", "h:1"),
            ("sec-fetch-site", "cross-site")
        ]))
        .is_some());
        assert!(cross_site(&headers(&[
            ("host", "h:1"),
            ("sec-fetch-site", "same-site")
        ]))
        .is_some());
        assert!(cross_site(&headers(&[("host", "h:1"), ("origin", "http://evil:1")])).is_some());
        assert!(cross_site(&headers(&[("host", "h:1"), ("origin", "null")])).is_some());
        assert!(cross_site(&headers(&[("host", "h:1"), ("origin", "http://h:2")])).is_some());
    }

    #[test]
    fn actor_names_are_bounded_and_plain() {
        assert_eq!(
            actor_name("  ann\u{7}\n ", Role::Operator),
            "ann (operator)"
        );
        assert_eq!(actor_name("", Role::Viewer), "viewer");
        assert_eq!(actor_name(&"x".repeat(500), Role::Viewer).len(), 64 + 9);
    }
}
