//! Why the database cannot be reached, in words an operator can act on: the cause (refused,
//! unknown host, authentication, no such database, TLS) with the host and port, the password
//! never shown, and whether waiting can help.

use std::str::FromStr;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

/// A failed connection attempt.
#[derive(Debug)]
pub struct Unreachable {
    pub message: String,
    /// Waiting may help (the server is starting, or was refused for now).
    pub transient: bool,
}

/// `url` with its password replaced by `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparseable URL)".to_string(),
    }
}

fn endpoint(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Connects once to `url` and explains the failure, if any.
pub async fn check(url: &str) -> Result<(), Unreachable> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| Unreachable {
        message: format!(
            "--database-url {} is not a PostgreSQL URL ({e}): use postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            redacted(url)
        ),
        transient: false,
    })?;
    let at = endpoint(&config);
    let connecting = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        config.connect(tokio_postgres::NoTls),
    );
    let error = match connecting.await {
        Ok(Ok((client, connection))) => {
            drop(client);
            drop(connection);
            return Ok(());
        }
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(Unreachable {
                message: format!("the database at {at} did not answer within 10 s"),
                transient: true,
            });
        }
    };
    Err(explain(&error, &at, &config))
}

fn explain(e: &tokio_postgres::Error, at: &str, config: &tokio_postgres::Config) -> Unreachable {
    let user = config.get_user().unwrap_or("(none)");
    let database = config.get_dbname().unwrap_or(user);
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let (message, transient) = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            (
                format!(
                    "authentication of user '{user}' failed at {at}: check the user and password in --database-url ({})",
                    db.message()
                ),
                false,
            )
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            (
                format!(
                    "the database '{database}' does not exist at {at}: create it (createdb {database}) or name another in --database-url"
                ),
                false,
            )
        } else if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
            (
                format!(
                    "the database at {at} refused the connection for now: {}",
                    db.message()
                ),
                true,
            )
        } else {
            (
                format!(
                    "the database at {at} refused the connection: {} ({})",
                    db.message(),
                    code.code()
                ),
                false,
            )
        };
        return Unreachable { message, transient };
    }
    let cause = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string());
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io.map(|i| i.kind()) {
        Some(std::io::ErrorKind::ConnectionRefused) => Unreachable {
            message: format!(
                "connection refused at {at}: is PostgreSQL running there, and listening on that address and port?"
            ),
            transient: true,
        },
        _ if cause.contains("lookup address") || cause.contains("Name or service not known") => {
            Unreachable {
                message: format!("unknown host in --database-url: {at} does not resolve ({cause})"),
                transient: false,
            }
        }
        _ if cause.to_lowercase().contains("tls") || cause.contains("SSL") => Unreachable {
            message: format!(
                "the database at {at} requires TLS, which this server does not speak to PostgreSQL ({cause}): allow a plain connection from this host (pg_hba.conf) or use a local proxy"
            ),
            transient: false,
        },
        _ => Unreachable {
            message: format!("cannot connect to the database at {at}: {cause}"),
            transient: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        let r = redacted("postgres://app:s3cret@db.example:6543/captures");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("db.example:6543"), "{r}");
        assert!(!redacted("not a url s3cret").contains("s3cret"));
    }

    #[tokio::test]
    async fn unparseable_urls_and_unknown_hosts_are_not_retried() {
        let e = check("postgres://app:s3cret@db:notaport/x").await.err();
        let e = e.map(|e| (e.transient, e.message)).unwrap_or_default();
        assert!(
            !e.0 && e.1.contains("not a PostgreSQL URL") && !e.1.contains("s3cret"),
            "{e:?}"
        );
        let e = check("postgres://app:s3cret@no-such-host.invalid:5432/x")
            .await
            .err();
        let e = e.map(|e| (e.transient, e.message)).unwrap_or_default();
        assert!(
            !e.0 && e.1.contains("unknown host") && e.1.contains("no-such-host.invalid:5432"),
            "{e:?}"
        );
        assert!(!e.1.contains("s3cret"), "{e:?}");
    }

    #[tokio::test]
    async fn a_refused_port_is_named_and_retried() {
        let e = check("postgres://app@127.0.0.1:1/x").await.err();
        let e = e.map(|e| (e.transient, e.message)).unwrap_or_default();
        assert!(
            e.0 && e.1.contains("connection refused at 127.0.0.1:1"),
            "{e:?}"
        );
    }
}
