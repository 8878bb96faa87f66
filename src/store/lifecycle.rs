//! The lifecycle values of the store's rows, typed: the text the migrations'
//! CHECK constraints allow, read into enums so that no caller compares
//! strings. Stored as `text` (a CHECK is easier to extend than a PostgreSQL
//! enum type); a value outside the enum reads as a decode error.

use std::fmt;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::gateways::Classification;
use crate::outcome::Outcome;

/// Reads and writes an enum as its text, with `as_str` and `parse`.
macro_rules! as_text {
    ($name:ty, $parse:expr) => {
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl Decode<'_, Postgres> for $name {
            fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                let parse: fn(&str) -> Option<$name> = $parse;
                parse(text).ok_or_else(|| format!("`{text}` is not a {}", stringify!($name)).into())
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

/// Declares a lifecycle enum with its text for each variant.
macro_rules! lifecycle {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        as_text!($name, $name::parse);
    };
}

lifecycle! {
    /// Where a command stands (`commands.state`).
    CommandState {
        /// Waiting for its `next_run_at`, or for its payment.
        Queued = "queued",
        /// Leased to an instance that drives it.
        Running = "running",
        /// Decided `unknown`: reconciled in the background.
        Unsettled = "unsettled",
        /// Decided (and, if it was `unknown`, settled).
        Done = "done",
    }
}

lifecycle! {
    /// A command's recovery point (`commands.phase`).
    Phase {
        /// No call with a side effect may be in flight.
        Ready = "ready",
        /// A call with a side effect may have been made: whoever runs the
        /// command next inquires first.
        Calling = "calling",
    }
}

lifecycle! {
    /// An attempt row's state (`attempts.status`).
    AttemptStatus {
        InFlight = "in_flight",
        Completed = "completed",
        /// Found in flight after a crash.
        Interrupted = "interrupted",
    }
}

lifecycle! {
    /// What an attempt row records (`attempts.kind`).
    AttemptKind {
        /// The command's own operation.
        Operation = "operation",
        /// An inquiry: a snapshot before, or a reconciliation after.
        Inquiry = "inquiry",
        /// A credential fetch.
        Auth = "auth",
    }
}

lifecycle! {
    /// Who a console caller is (`console_audit.role`).
    Role {
        /// Reads everything.
        Viewer = "viewer",
        /// Reads, and acts.
        Operator = "operator",
    }
}

as_text!(Outcome, Outcome::parse);
as_text!(Classification, Classification::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_reads_back_from_its_text() {
        for state in [
            CommandState::Queued,
            CommandState::Running,
            CommandState::Unsettled,
            CommandState::Done,
        ] {
            assert_eq!(CommandState::parse(state.as_str()), Some(state));
        }
        assert_eq!(Phase::parse("calling"), Some(Phase::Calling));
        assert_eq!(
            AttemptStatus::parse("in_flight"),
            Some(AttemptStatus::InFlight)
        );
        for kind in [
            AttemptKind::Operation,
            AttemptKind::Inquiry,
            AttemptKind::Auth,
        ] {
            assert_eq!(AttemptKind::parse(kind.as_str()), Some(kind));
        }
        for role in [Role::Viewer, Role::Operator] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(
            Classification::parse("not_applied"),
            Some(Classification::NotApplied)
        );
        assert_eq!(CommandState::parse("Queued"), None);
        assert_eq!(
            serde_json::to_value(AttemptStatus::InFlight).unwrap(),
            "in_flight"
        );
    }
}
