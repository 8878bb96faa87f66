//! The configuration's own tests: every message names the file, the table and the key.

use std::time::Duration;

use super::*;
use secrecy::ExposeSecret;

const SPEC_EXAMPLE: &str = r#"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"    # overridden by $AMQP_URL

[database]
url = "postgres://postgres@127.0.0.1:5432/backoffice"   # overridden by $DATABASE_URL

[accounts.paymentz.default]
base_url = "https://test.paymentz.com"
partner_id = "197"
username = "merchant-login"
member_id = "11359"
secure_key = "${PAYMENTZ_SECURE_KEY}"

[accounts.praxis.default]
base_url = "https://pci-gw-test.praxispay.com"
merchant_id = "Test-Integration-Merchant"
merchant_secret = "${PRAXIS_MERCHANT_SECRET}"
frontend = "Integration TEST USD"
"#;

fn env_with_secrets(name: &str) -> Option<String> {
    match name {
        "PAYMENTZ_SECURE_KEY" => Some("pz-secret".into()),
        "PRAXIS_MERCHANT_SECRET" => Some("px-secret".into()),
        _ => None,
    }
}

fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text, env)
}

#[test]
fn accepts_the_spec_example_as_written() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    assert_eq!(config.accounts.len(), 2);
    assert_eq!(config.amqp.command_queue, "backoffice.commands");
    assert_eq!(
        config.database.url.expose_secret(),
        "postgres://postgres@127.0.0.1:5432/backoffice"
    );
}

#[test]
fn environment_overrides_connection_urls() {
    let config = parse(SPEC_EXAMPLE, |n| match n {
        "AMQP_URL" => Some("amqp://u:p@broker:5672/vh".into()),
        "DATABASE_URL" => Some("postgres://db/other".into()),
        other => env_with_secrets(other),
    })
    .unwrap();
    assert_eq!(config.amqp.url.expose_secret(), "amqp://u:p@broker:5672/vh");
    assert_eq!(config.database.url.expose_secret(), "postgres://db/other");
}

#[test]
fn a_missing_variable_names_itself_and_the_key() {
    let err = parse(SPEC_EXAMPLE, |n| match n {
        "PRAXIS_MERCHANT_SECRET" => Some("x".into()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("PAYMENTZ_SECURE_KEY"), "{err}");
    assert!(err.contains("secure_key"), "{err}");
    assert!(err.contains("accounts.paymentz.default"), "{err}");
    assert!(err.contains("test.toml"), "{err}");
}

#[test]
fn mistakes_name_file_table_and_key() {
    let missing = SPEC_EXAMPLE.replace("member_id = \"11359\"\n", "");
    let err = parse(&missing, env_with_secrets).unwrap_err().to_string();
    assert_eq!(
        err,
        "test.toml: [accounts.paymentz.default] key `member_id`: missing"
    );

    let bad_url = SPEC_EXAMPLE.replace("https://test.paymentz.com", "not a url");
    let err = parse(&bad_url, env_with_secrets).unwrap_err().to_string();
    assert!(
        err.starts_with("test.toml: [accounts.paymentz.default] key `base_url`: malformed URL"),
        "{err}"
    );

    let unknown_gateway = format!("{SPEC_EXAMPLE}\n[accounts.stripe.default]\nkey = \"x\"\n");
    let err = parse(&unknown_gateway, env_with_secrets)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[accounts.stripe]") && err.contains("unknown gateway `stripe`"),
        "{err}"
    );

    let typo = SPEC_EXAMPLE.replace("frontend =", "frontent =");
    let err = parse(&typo, env_with_secrets).unwrap_err().to_string();
    assert!(
        err.contains("[accounts.praxis.default] key `frontend`: missing"),
        "{err}"
    );

    let bad_amqp = SPEC_EXAMPLE.replace("amqp://guest", "http://guest");
    let err = parse(&bad_amqp, env_with_secrets).unwrap_err().to_string();
    assert!(err.contains("[amqp] key `url`: URL scheme"), "{err}");

    let bad_duration = format!("{SPEC_EXAMPLE}\n[worker]\nlease = \"90 parsecs\"\n");
    let err = parse(&bad_duration, env_with_secrets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[worker] key `lease`"), "{err}");
}

#[test]
fn several_amqp_urls_from_the_file_or_the_environment() {
    let urls = |config: &Config| {
        config
            .amqp
            .urls
            .iter()
            .map(|u| u.expose_secret().to_string())
            .collect::<Vec<_>>()
    };
    let one = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    assert_eq!(urls(&one), ["amqp://guest:guest@127.0.0.1:5672/%2f"]);
    let cluster = SPEC_EXAMPLE.replace(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "urls = [\"amqp://u:p@a:5701/%2f\", \"amqp://u:p@b:5702/%2f\"]",
    );
    let config = parse(&cluster, env_with_secrets).unwrap();
    assert_eq!(
        urls(&config),
        ["amqp://u:p@a:5701/%2f", "amqp://u:p@b:5702/%2f"]
    );
    assert_eq!(config.amqp.url.expose_secret(), "amqp://u:p@a:5701/%2f");
    let config = parse(&cluster, |name| match name {
        "AMQP_URL" => Some("amqp://x@n1:5672/v, amqp://x@n2:5672/v".into()),
        other => env_with_secrets(other),
    })
    .unwrap();
    assert_eq!(urls(&config), ["amqp://x@n1:5672/v", "amqp://x@n2:5672/v"]);

    let both = cluster.replace("[amqp]", "[amqp]\nurl = \"amqp://a/%2f\"");
    let err = parse(&both, env_with_secrets).unwrap_err().to_string();
    assert!(err.contains("[amqp] key `urls`: give either"), "{err}");
    let bad = cluster.replace("amqp://u:p@b:5702/%2f", "http://secret-pass@b/");
    let err = parse(&bad, env_with_secrets).unwrap_err().to_string();
    assert!(err.contains("[amqp] key `urls`: URL scheme"), "{err}");
    assert!(!err.contains("secret-pass"), "{err}");
    let err = parse(&cluster, |name| match name {
        "AMQP_URL" => Some("amqp://n1/v,".into()),
        other => env_with_secrets(other),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("$AMQP_URL"), "{err}");
}

#[test]
fn retention_has_long_defaults_off_switches_and_checked_values() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    let days = |d: u64| Some(Duration::from_secs(d * 86_400));
    assert_eq!(config.retention.commands, days(400));
    assert_eq!(config.retention.published_events, days(7));
    assert_eq!(config.retention.dead_letters, days(90));
    let text = format!(
        "{SPEC_EXAMPLE}\n[retention]\ncommands = \"off\"\ninterval = \"off\"\nbatch = 50\n"
    );
    let config = parse(&text, env_with_secrets).unwrap();
    assert_eq!(config.retention.commands, None);
    assert_eq!(config.retention.interval, None);
    assert_eq!(config.retention.batch, 50);
    for (bad, says) in [
        (
            "commands = \"0d\"",
            "key `commands`: must be longer than zero",
        ),
        ("commands = \"forever\"", "key `commands`"),
        (
            "commands = \"5d\"",
            "key `published_events`: is longer than `commands`",
        ),
        ("batch = 0", "key `batch`"),
        ("keep = \"1d\"", "keep"),
    ] {
        let text = format!("{SPEC_EXAMPLE}\n[retention]\n{bad}\n");
        let err = parse(&text, env_with_secrets).unwrap_err().to_string();
        assert!(
            err.contains("[retention]") && err.contains(says),
            "{bad}: {err}"
        );
    }
}

#[test]
fn plain_http_to_another_machine_needs_allow_http() {
    let remote = SPEC_EXAMPLE.replace("https://test.paymentz.com", "http://test.paymentz.com");
    let err = parse(&remote, env_with_secrets).unwrap_err().to_string();
    assert!(
        err.starts_with("test.toml: [accounts.paymentz.default] key `base_url`: plain http"),
        "{err}"
    );
    assert!(
        err.contains("allow_http = true") && err.contains("[http]"),
        "{err}"
    );

    let allowed = format!("{remote}\n[http]\nallow_http = true\n");
    let config = parse(&allowed, env_with_secrets).unwrap();
    assert!(config.http.allow_http);

    // Loopback needs nothing: that is where the simulator listens.
    let local = SPEC_EXAMPLE.replace("https://pci-gw-test.praxispay.com", "http://127.0.0.1:8099");
    assert!(!parse(&local, env_with_secrets).unwrap().http.allow_http);

    let not_bool = format!("{SPEC_EXAMPLE}\n[http]\nallow_http = \"yes\"\n");
    let err = parse(&not_bool, env_with_secrets).unwrap_err().to_string();
    assert_eq!(
        err,
        "test.toml: [http] key `allow_http`: must be true or false"
    );
}

#[test]
fn http_defaults_and_limits() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    assert_eq!(config.http, HttpSettings::default());
    assert_eq!(config.http.proxy, None);
    assert_eq!(config.http.max_answer_bytes, 4 * 1024 * 1024);

    let set = format!(
        "{SPEC_EXAMPLE}\n[http]\nproxy = \"http://proxy.internal:3128\"\nmax_answer_bytes = 1048576\n"
    );
    let config = parse(&set, env_with_secrets).unwrap();
    assert_eq!(
        config.http.proxy.as_ref().map(|p| p.as_str()),
        Some("http://proxy.internal:3128/")
    );
    assert_eq!(config.http.max_answer_bytes, 1 << 20);

    let bad_proxy = format!("{SPEC_EXAMPLE}\n[http]\nproxy = \"socks5://p:1080\"\n");
    let err = parse(&bad_proxy, env_with_secrets).unwrap_err().to_string();
    assert!(err.starts_with("test.toml: [http] key `proxy`: "), "{err}");

    let tiny = format!("{SPEC_EXAMPLE}\n[http]\nmax_answer_bytes = 10\n");
    let err = parse(&tiny, env_with_secrets).unwrap_err().to_string();
    assert!(
        err.starts_with("test.toml: [http] key `max_answer_bytes`: must be between"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let text = SPEC_EXAMPLE.replace("[database]\n", "[database]\npool = 3\n");
    let err = parse(&text, env_with_secrets).unwrap_err().to_string();
    assert_eq!(err, "test.toml: [database] key `pool`: unknown key");
}

#[test]
fn the_admin_table_names_its_mistakes() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    assert_eq!(config.admin.listen, None, "no admin listener unless asked");
    let with = |table: &str| format!("{SPEC_EXAMPLE}\n[admin]\n{table}\n");
    let config = parse(
        &with("listen = \"127.0.0.1:9090\"\nmax_connections = 8\nheader_timeout = \"2s\""),
        env_with_secrets,
    )
    .unwrap();
    assert_eq!(config.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(config.admin.limits.max_connections, 8);
    assert_eq!(config.admin.limits.header_timeout, Duration::from_secs(2));
    let err = parse(&with("listen = \"localhost\""), env_with_secrets)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("test.toml: [admin] key `listen`: `localhost` is not an address"),
        "{err}"
    );
    let err = parse(&with("request_timeout = \"0s\""), env_with_secrets)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "test.toml: [admin] key `request_timeout`: must be longer than zero"
    );
}

#[test]
fn the_console_table_takes_two_distinct_secret_tokens() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    assert!(!config.console.enabled(), "no tokens: no console");
    let with = |table: &str| format!("{SPEC_EXAMPLE}\n[console]\n{table}\n");
    let env = |n: &str| match n {
        "V" => Some("viewer-token-1234".into()),
        "S" => Some("short-token-12".into()),
        "O" => Some("operator-token-1234".into()),
        other => env_with_secrets(other),
    };
    let config = parse(
        &with("viewer_token = \"${V}\"\noperator_token = \"${O}\""),
        env,
    )
    .unwrap();
    assert!(config.console.enabled());
    assert_eq!(
        config
            .console
            .operator_token
            .as_ref()
            .unwrap()
            .expose_secret(),
        "operator-token-1234"
    );
    assert!(!format!("{config:?}").contains("operator-token-1234"));
    let err = parse(&with("viewer_token = \"short\""), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[console] key `viewer_token`"), "{err}");
    assert!(!err.contains("short\""), "{err}");
    let err = parse(
        &with("viewer_token = \"${V}\"\noperator_token = \"${V}\""),
        env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("must differ"), "{err}");
    let err = parse(&with("viewer_token = \"${S}\""), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("short-token-12"), "{err}");
    let err = parse(&with("viewer = \"${V}\""), env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown key"), "{err}");
}

#[test]
fn secrets_never_print() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("pz-secret") && !debug.contains("px-secret"),
        "{debug}"
    );
}

#[test]
fn a_short_secret_is_refused_naming_file_table_and_key() {
    let err = parse(SPEC_EXAMPLE, |n| match n {
        "PAYMENTZ_SECURE_KEY" => Some("pz-secret".into()),
        "PRAXIS_MERCHANT_SECRET" => Some("seven77".into()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "test.toml: [accounts.praxis.default] key `merchant_secret`: is 7 characters long; a secret must have at least 8"
    );
    assert!(!err.contains("seven77"));
    let config = parse(SPEC_EXAMPLE, |n| match n {
        "PAYMENTZ_SECURE_KEY" => Some("eight888".into()),
        "PRAXIS_MERCHANT_SECRET" => Some("eight888".into()),
        _ => None,
    });
    assert!(config.is_ok(), "8 characters are enough");
}

#[test]
fn body_cap_and_statement_timeout() {
    let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
    assert_eq!(config.amqp.max_command_bytes, DEFAULT_MAX_COMMAND_BYTES);
    assert_eq!(config.database.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
    let text = SPEC_EXAMPLE
        .replace("[amqp]\n", "[amqp]\nmax_command_bytes = 131072\n")
        .replace("[database]\n", "[database]\nstatement_timeout = \"5s\"\n");
    let config = parse(&text, env_with_secrets).unwrap();
    assert_eq!(config.amqp.max_command_bytes, 131_072);
    assert_eq!(config.database.statement_timeout, Duration::from_secs(5));
    let small = SPEC_EXAMPLE.replace("[amqp]\n", "[amqp]\nmax_command_bytes = 100\n");
    let err = parse(&small, env_with_secrets).unwrap_err().to_string();
    assert!(
        err.contains("[amqp] key `max_command_bytes`: must be between"),
        "{err}"
    );
    let zero = SPEC_EXAMPLE.replace("[database]\n", "[database]\nstatement_timeout = \"0s\"\n");
    let err = parse(&zero, env_with_secrets).unwrap_err().to_string();
    assert!(err.contains("[database] key `statement_timeout`"), "{err}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("5y").is_err());
}

#[test]
fn the_reader_is_a_leaf_and_the_registry_knows_only_the_reader() {
    // The reader imports nothing from the crate, so that the gateways can
    // read their own tables without depending on the rest of the
    // configuration (which depends on them through the registry).
    let reader = include_str!("reader.rs");
    let code = reader.split("#[cfg(test)]").next().unwrap_or_default();
    for line in code.lines().map(str::trim_start) {
        assert!(
            !line.contains("crate::") && !line.contains("super::"),
            "reader.rs: {line}"
        );
    }
    let registry = include_str!("../gateways/registry.rs");
    for (at, _) in registry.match_indices("crate::config") {
        assert!(
            registry[at..].starts_with("crate::config::reader"),
            "registry.rs: {}",
            registry[at..].lines().next().unwrap_or_default()
        );
    }
    for gateway in [
        include_str!("../gateways/paymentz/settings.rs"),
        include_str!("../gateways/praxis/settings.rs"),
        include_str!("../gateways/skeleton/settings.rs"),
    ] {
        for (at, _) in gateway.match_indices("crate::config") {
            assert!(gateway[at..].starts_with("crate::config::reader"));
        }
    }
}
