//! The merchant's rules (`[automation]`, `[[automation.rules]]`) and the one
//! decision they make about an authorization.
//!
//! First match in file order wins; no match is a hold; an authorization
//! whose processed amount or currency differs from its authorized one is
//! held whatever the rules say, and so is one in a currency the ISO table
//! does not know (its amounts cannot be compared). Every decision carries
//! the name of the rule that made it and the inputs it matched on, stored
//! with the notification. A mistake in the file names the file, the rule
//! and the key.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::currency;
use super::Notice;
use crate::config::{AccountSpec, ConfigError, Section};

/// What a rule (or a person, or a deadline) does with an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Capture,
    Cancel,
    Hold,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Capture => "capture",
            Action::Cancel => "cancel",
            Action::Hold => "hold",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "capture" => Some(Action::Capture),
            "cancel" => Some(Action::Cancel),
            "hold" => Some(Action::Hold),
            _ => None,
        }
    }
}

/// What a hold past `hold_deadline` becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeadline {
    /// A cancel command (`"rule": "deadline"`).
    Cancel,
    /// Only reported: a log line, a metric, the operator's list.
    Alert,
}

/// One `[[automation.rules]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub gateway: String,
    pub account: Option<String>,
    pub frontend: Option<String>,
    pub currency: Option<String>,
    /// Inclusive, major units, as written.
    pub min_amount: Option<String>,
    pub max_amount: Option<String>,
    pub payment_method: Option<String>,
    pub action: Action,
    pub delay: Duration,
}

/// `[automation]`.
#[derive(Debug, Clone)]
pub struct Automation {
    pub hold_deadline: Duration,
    pub on_deadline: OnDeadline,
    pub rules: Vec<Rule>,
}

impl Default for Automation {
    fn default() -> Self {
        Automation {
            hold_deadline: Duration::from_secs(6 * 86_400),
            on_deadline: OnDeadline::Cancel,
            rules: Vec::new(),
        }
    }
}

/// The rule's name in a decision no rule of the file made.
pub const NO_RULE: &str = "none";
/// The rule's name of a decision forced by an amount or currency mismatch.
pub const MISMATCH: &str = "mismatch";
/// The rule's name of a deadline's action.
pub const DEADLINE: &str = "deadline";
/// The rule's name of a person's release.
pub const OPERATOR: &str = "operator";

/// What the rules decided about one authorization.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    pub rule: String,
    #[serde(skip)]
    pub delay: Duration,
    /// The inputs the decision was made on.
    pub inputs: serde_json::Value,
    /// Why, in words, when it is a hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Automation {
    /// Reads `[automation]` (absent: no rules, every authorization held).
    /// `accounts` are the configured ones: a rule may only name those.
    pub fn read(
        file: &Path,
        table: Option<&toml::Table>,
        accounts: &[AccountSpec],
    ) -> Result<Automation, ConfigError> {
        let empty = toml::Table::new();
        let section = Section::new(file, "automation".into(), table.unwrap_or(&empty));
        let d = Automation::default();
        let hold_deadline = section.duration_or("hold_deadline", d.hold_deadline)?;
        if hold_deadline.is_zero() {
            return Err(section.error("hold_deadline", "must be longer than zero"));
        }
        let on_deadline = match section.str_or("on_deadline", "cancel")?.as_str() {
            "cancel" => OnDeadline::Cancel,
            "alert" => OnDeadline::Alert,
            other => {
                return Err(section.error(
                    "on_deadline",
                    format!("`{other}` is not \"cancel\" or \"alert\""),
                ))
            }
        };
        let mut rules: Vec<Rule> = Vec::new();
        let listed = match section.raw("rules") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items.clone(),
            Some(_) => {
                return Err(
                    section.error("rules", "must be an array of tables ([[automation.rules]])")
                )
            }
        };
        section.finish()?;
        for (index, item) in listed.iter().enumerate() {
            let toml::Value::Table(rule_table) = item else {
                return Err(section.error("rules", format!("rule {} is not a table", index + 1)));
            };
            let label = match rule_table.get("name") {
                Some(toml::Value::String(n)) => format!("automation.rules #{} `{n}`", index + 1),
                _ => format!("automation.rules #{}", index + 1),
            };
            let r = Section::new(file, label, rule_table);
            let rule = read_rule(&r, accounts)?;
            if rules.iter().any(|other| other.name == rule.name) {
                return Err(r.error("name", format!("`{}` is used by another rule", rule.name)));
            }
            r.finish()?;
            rules.push(rule);
        }
        Ok(Automation {
            hold_deadline,
            on_deadline,
            rules,
        })
    }

    /// The decision about an authorization on `gateway`/`account`.
    pub fn decide(&self, gateway: &str, account: &str, notice: &Notice) -> Decision {
        let exponent = notice.currency.as_deref().and_then(currency::exponent);
        let minor = match (notice.amount_text.as_deref(), exponent) {
            (Some(text), Some(exp)) => minor_of(gateway, text, exp),
            _ => None,
        };
        let inputs = serde_json::json!({
            "gateway": gateway,
            "account": account,
            "payment_id": notice.payment_id,
            "frontend": notice.frontend,
            "currency": notice.currency,
            "amount": notice.amount_text,
            "amount_minor": minor,
            "payment_method": notice.payment_method,
        });
        let hold = |rule: &str, reason: String| Decision {
            action: Action::Hold,
            rule: rule.to_string(),
            delay: Duration::ZERO,
            inputs: inputs.clone(),
            reason: Some(reason),
        };
        if let Some(why) = &notice.mismatch {
            return hold(MISMATCH, why.clone());
        }
        let Some(minor) = minor else {
            return hold(
                NO_RULE,
                match (&notice.currency, exponent) {
                    (None, _) => "no currency".into(),
                    (Some(c), None) => format!("currency {c} is not in the ISO 4217 table"),
                    (Some(_), Some(_)) => "no usable amount".into(),
                },
            );
        };
        let Some(exp) = exponent else {
            return hold(NO_RULE, "no currency".into());
        };
        for rule in &self.rules {
            if rule.matches(gateway, account, notice, minor, exp) {
                return Decision {
                    action: rule.action,
                    rule: rule.name.clone(),
                    delay: rule.delay,
                    inputs,
                    reason: (rule.action == Action::Hold)
                        .then(|| format!("rule `{}` holds it", rule.name)),
                };
            }
        }
        hold(NO_RULE, "no rule matches".into())
    }
}

/// The amount in the currency's minor units: Praxis sends them already
/// (an integer), Paymentz sends major units with two decimals.
fn minor_of(gateway: &str, text: &str, exponent: u32) -> Option<i64> {
    if gateway == crate::gateways::praxis::NAME {
        text.parse().ok()
    } else {
        currency::to_minor(text, exponent)
    }
}

impl Rule {
    fn matches(
        &self,
        gateway: &str,
        account: &str,
        notice: &Notice,
        minor: i64,
        exponent: u32,
    ) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let within = |bound: &Option<String>, ok: fn(i64, i64) -> bool| match bound {
            None => true,
            Some(text) => currency::to_minor(text, exponent).is_some_and(|b| ok(minor, b)),
        };
        self.gateway == gateway
            && same(&self.account, Some(account))
            && same(&self.frontend, notice.frontend.as_deref())
            && same(&self.currency, notice.currency.as_deref())
            && same(&self.payment_method, notice.payment_method.as_deref())
            && within(&self.min_amount, |a, b| a >= b)
            && within(&self.max_amount, |a, b| a <= b)
    }
}

fn read_rule(r: &Section<'_>, accounts: &[AccountSpec]) -> Result<Rule, ConfigError> {
    let name = r.str("name")?;
    if name.len() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(r.error(
            "name",
            "must be at most 64 characters, none a control character",
        ));
    }
    let gateway = r.str("gateway")?;
    if crate::gateways::registry::find(&gateway).is_none() {
        return Err(r.error("gateway", format!("unknown gateway `{gateway}`")));
    }
    let account = r.opt_str("account")?;
    let configured = |a: &str| accounts.iter().any(|s| s.gateway == gateway && s.name == a);
    if let Some(a) = &account {
        if !configured(a) {
            return Err(r.error("account", format!("there is no [accounts.{gateway}.{a}]")));
        }
    }
    let currency = r.opt_str("currency")?;
    if let Some(c) = &currency {
        if currency::exponent(c).is_none() {
            return Err(r.error("currency", format!("`{c}` is not an ISO 4217 code")));
        }
    }
    let amount = |key: &str| -> Result<Option<String>, ConfigError> {
        match r.opt_str(key)? {
            None => Ok(None),
            Some(text) if currency::to_minor(&text, 3).is_some() => Ok(Some(text)),
            Some(text) => Err(r.error(
                key,
                format!("`{text}` is not a decimal amount in major units such as \"500.00\""),
            )),
        }
    };
    let min_amount = amount("min_amount")?;
    let max_amount = amount("max_amount")?;
    if let (Some(min), Some(max)) = (&min_amount, &max_amount) {
        if currency::to_minor(min, 3) > currency::to_minor(max, 3) {
            return Err(r.error("max_amount", format!("{max} is below min_amount {min}")));
        }
    }
    let action_text = r.str("action")?;
    let action = Action::parse(&action_text).ok_or_else(|| {
        r.error(
            "action",
            format!("`{action_text}` is not \"capture\", \"cancel\" or \"hold\""),
        )
    })?;
    Ok(Rule {
        name,
        account,
        frontend: r.opt_str("frontend")?,
        currency,
        min_amount,
        max_amount,
        payment_method: r.opt_str("payment_method")?,
        action,
        delay: r.duration_or("delay", Duration::ZERO)?,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::Meaning;

    fn automation(text: &str) -> Result<Automation, ConfigError> {
        let root: toml::Table = text.parse().unwrap();
        let accounts = vec![AccountSpec::unread(
            "t.toml",
            "praxis",
            "default",
            toml::Table::new(),
        )];
        Automation::read(
            Path::new("t.toml"),
            root.get("automation").and_then(|v| v.as_table()),
            &accounts,
        )
    }

    fn notice(amount: &str, currency: &str) -> Notice {
        Notice {
            payment_id: "1".into(),
            status: "authorized".into(),
            meaning: Meaning::Authorized,
            amount_text: Some(amount.into()),
            amount: amount.parse().ok().map(crate::money::Amount::from_minor),
            currency: Some(currency.into()),
            mismatch: None,
            frontend: Some("Integration TEST USD".into()),
            payment_method: Some("Credit Card".into()),
            metadata: serde_json::Map::new(),
        }
    }

    const SPEC: &str = r#"
[automation]
hold_deadline = "6d"
on_deadline = "cancel"

[[automation.rules]]
name = "small-usd"
gateway = "praxis"
account = "default"
frontend = "Integration TEST USD"
currency = "USD"
min_amount = "0.00"
max_amount = "500.00"
payment_method = "Credit Card"
action = "capture"
delay = "0s"

[[automation.rules]]
name = "yen"
gateway = "praxis"
currency = "JPY"
max_amount = "1000"
action = "cancel"
"#;

    #[test]
    fn the_spec_example_reads_and_first_match_wins() {
        let a = automation(SPEC).unwrap();
        assert_eq!(a.rules.len(), 2);
        assert_eq!(a.hold_deadline, Duration::from_secs(6 * 86_400));
        let d = a.decide("praxis", "default", &notice("50000", "USD"));
        assert_eq!((d.action, d.rule.as_str()), (Action::Capture, "small-usd"));
        assert_eq!(d.inputs["amount_minor"], 50000);
        let d = a.decide("praxis", "default", &notice("50001", "USD"));
        assert_eq!((d.action, d.rule.as_str()), (Action::Hold, NO_RULE));
    }

    #[test]
    fn amounts_compare_in_the_currencys_own_minor_units() {
        let a = automation(SPEC).unwrap();
        // JPY has no decimals: 1000 minor units is 1000 yen.
        let d = a.decide("praxis", "default", &notice("1000", "JPY"));
        assert_eq!((d.action, d.rule.as_str()), (Action::Cancel, "yen"));
        let d = a.decide("praxis", "default", &notice("1001", "JPY"));
        assert_eq!(d.action, Action::Hold);
    }

    #[test]
    fn a_mismatch_or_an_unknown_currency_is_always_held() {
        let a = automation(SPEC).unwrap();
        let mut n = notice("100", "USD");
        n.mismatch = Some("charge_amount 90 differs from amount 100".into());
        let d = a.decide("praxis", "default", &n);
        assert_eq!((d.action, d.rule.as_str()), (Action::Hold, MISMATCH));
        let d = a.decide("praxis", "default", &notice("100", "XXQ"));
        assert_eq!(d.action, Action::Hold);
        assert!(d.reason.unwrap().contains("ISO 4217"));
    }

    #[test]
    fn mistakes_name_the_file_the_rule_and_the_key() {
        let err = |text: &str| automation(text).unwrap_err().to_string();
        assert_eq!(
            err("[automation]\n[[automation.rules]]\nname = \"r1\"\ngateway = \"praxis\"\naction = \"refund\"\n"),
            "t.toml: [automation.rules #1 `r1`] key `action`: `refund` is not \"capture\", \"cancel\" or \"hold\""
        );
        assert!(err("[[automation.rules]]\nname = \"r\"\ngateway = \"praxis\"\naction = \"capture\"\nmin_amount = \"ten\"\n")
            .contains("key `min_amount`"));
        assert!(err("[[automation.rules]]\nname = \"r\"\ngateway = \"praxis\"\naction = \"capture\"\naccount = \"other\"\n")
            .contains("there is no [accounts.praxis.other]"));
        assert!(
            err("[[automation.rules]]\ngateway = \"praxis\"\naction = \"capture\"\n")
                .contains("[automation.rules #1] key `name`: missing")
        );
        assert!(err("[[automation.rules]]\nname = \"a\"\ngateway = \"praxis\"\naction = \"hold\"\n[[automation.rules]]\nname = \"a\"\ngateway = \"praxis\"\naction = \"hold\"\n")
            .contains("used by another rule"));
        assert!(err("[[automation.rules]]\nname = \"a\"\ngateway = \"praxis\"\naction = \"hold\"\ncolour = \"red\"\n")
            .contains("key `colour`: unknown key"));
        assert!(err("[automation]\non_deadline = \"later\"\n").contains("key `on_deadline`"));
    }

    #[test]
    fn no_rules_means_every_authorization_is_held() {
        let a = automation("").unwrap();
        let d = a.decide("praxis", "default", &notice("1", "USD"));
        assert_eq!(d.action, Action::Hold);
        assert_eq!(a.on_deadline, OnDeadline::Cancel);
    }
}
