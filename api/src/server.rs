//! Builds and runs the HTTP server.

mod http1;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_http::Protocol;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{ServeArgs, Timing};
use crate::db::DbPool;
use crate::embedded_pg::EmbeddedPostgres;
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::notify::Hub;
use crate::openapi::ApiDoc;
use crate::state::{AppState, CaptureReads};

fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, StartupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StartupError(format!(
                "cannot read the certificate {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(StartupError(format!(
            "--tls-cert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        StartupError(format!(
            "--tls-key {} holds no PEM private key (-----BEGIN PRIVATE KEY-----, or its RSA or EC form): {e}",
            key.display()
        ))
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StartupError(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| StartupError(format!("TLS certificate and key do not fit: {e}")))
}

/// The demo subscription of the embedded default's first start.
pub const DEMO_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000001";

/// At the embedded default's first start (no principal yet): a service principal with Owner on
/// the demo subscription, and how to get a token for it.
async fn first_start_principal(state: &AppState, args: &ServeArgs) {
    let result = async {
        let mut conn = state.conn().await?;
        if !crate::auth::principals::list(&mut conn).await?.is_empty() {
            return Ok(None);
        }
        let (sp, secret) = crate::auth::principals::create(&mut conn, "demo-owner").await?;
        crate::auth::rbac::create(
            &mut conn,
            &sp.object_id.to_string(),
            crate::auth::rbac::Role::Owner,
            &format!("/subscriptions/{DEMO_SUBSCRIPTION}"),
        )
        .await?;
        Ok::<_, crate::error::ApiError>(Some((sp, secret)))
    }
    .await;
    match result {
        Ok(Some((sp, _secret))) => println!(
            "capture-api: first start: created the service principal 'demo-owner' with Owner on /subscriptions/{DEMO_SUBSCRIPTION}\n\
             \x20 a token for curl:  TOKEN=$(cargo run -q -p capture-api -- token --data-dir {dir} --principal {client})\n\
             \x20                    curl -H \"Authorization: Bearer $TOKEN\" ...\n\
             \x20 for SDKs and az:   a principal with a secret: capture-api service-principals create --name NAME (tenant {tenant})",
            dir = args.database.data_dir.display(),
            client = sp.client_id,
            tenant = state.auth.config.tenant,
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot create the demo principal"),
    }
}

/// With the embedded default: the demo user (created at the first start, Owner of the demo
/// subscription, with no password) and a one-time sign-in link for it, printed at every start.
async fn demo_sign_in_link(state: &AppState, args: &ServeArgs, scheme: &str, local: SocketAddr) {
    use crate::auth::users;
    let result = async {
        let mut conn = state.conn().await?;
        let user = match users::find(&mut conn, users::DEMO_USER).await? {
            Some(u) => Some(u),
            // Only in a database that never had users: a deleted demo user stays deleted.
            None if users::list(&mut conn).await?.is_empty() => {
                let u = users::create(&mut conn, users::DEMO_USER, None).await?;
                crate::auth::rbac::create(
                    &mut conn,
                    &u.id.to_string(),
                    crate::auth::rbac::Role::Owner,
                    &format!("/subscriptions/{DEMO_SUBSCRIPTION}"),
                )
                .await?;
                Some(u)
            }
            None => None,
        };
        let Some(user) = user else {
            return Ok(None);
        };
        Ok::<_, crate::error::ApiError>(Some(users::create_sign_in_link(&mut conn, user.id).await?))
    }
    .await;
    let base = match &args.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = match local.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    SocketAddr::from(([127, 0, 0, 1], local.port()))
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
                }
                _ => local,
            };
            format!("{scheme}://{host}")
        }
    };
    match result {
        Ok(Some(token)) => println!(
            "capture-api: sign in to the console as '{demo}' (Owner of /subscriptions/{DEMO_SUBSCRIPTION}): {link}\n\
             \x20 (one-time, valid {minutes} minutes; another one: capture-api sign-in-link --user {demo} --data-dir {dir})",
            demo = users::DEMO_USER,
            link = users::sign_in_url(&base, &token),
            minutes = users::SIGN_IN_LINK_TTL.as_secs() / 60,
            dir = args.database.data_dir.display(),
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot make the demo user's sign-in link"),
    }
}

/// Runs `capture-api serve` until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), StartupError> {
    // One server per data folder, decided before anything is touched; held until we exit.
    let _owner = match args.database.external_url() {
        Some(_) => None,
        None => Some(own_data_folder(&args.database.data_dir)?),
    };
    // What the operator can fix without a database is checked before any database work.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let listening = bind(args.listen)?;
    let embedded = match args.database.external_url() {
        Some(_) => None,
        None => Some(EmbeddedPostgres::start(&args.database.data_dir).await?),
    };
    let result = serve_with(&args, embedded.as_ref(), listening, tls).await;
    if let Some(pg) = &embedded {
        pg.stop().await;
    }
    result
}

/// Locks `DATA_DIR/server.lock` for this process (released when it exits, however it exits),
/// or says which server holds it.
fn own_data_folder(data_dir: &std::path::Path) -> Result<std::fs::File, StartupError> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StartupError(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join("server.lock");
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StartupError(format!("cannot open {}: {e}", path.display())))?;
    if file.try_lock().is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(StartupError(format!(
            "another capture-api server ({}) is running on the data folder {}: stop it first, or give this one another --data-dir",
            match holder.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            },
            data_dir.display()
        )));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

async fn serve_with(
    args: &ServeArgs,
    embedded: Option<&EmbeddedPostgres>,
    (listener, local): (TcpListener, SocketAddr),
    tls: Option<rustls::ServerConfig>,
) -> Result<(), StartupError> {
    let database_url = database_url(args, embedded)?;
    migrate_with_retry(&database_url).await?;
    let pool = crate::db::pool(&database_url, args.db_pool_size)?;
    let hub = Arc::new(Hub::default());
    tokio::spawn(hub.clone().listen(database_url.clone()));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let timing = args.timing();
    let sweeper = tokio::spawn(crate::lifecycle::sweeper::run(
        pool.clone(),
        timing.clone(),
        shutdown_rx,
    ));
    let state = app_state(args, pool, hub, timing)?;
    if let Some(pg) = embedded {
        // Restarts the cluster if its postmaster exits; `pg.stop()` waits for it to end.
        pg.supervise(state.metrics.clone(), shutdown_tx.subscribe());
    }
    let (running, scheme) = run_server(args, &state, listener, tls)?;
    if embedded.is_some() && state.auth.config.enabled {
        first_start_principal(&state, args).await;
        demo_sign_in_link(&state, args, scheme, local).await;
    }
    // At SIGTERM or SIGINT (which also start the server's graceful stop), long polls answer
    // at once, so that the stop does not wait for them.
    let hub = state.hub.clone();
    tokio::spawn(async move {
        close_on_signal(&hub).await;
    });
    // Scripts and tests wait for this line.
    println!("capture-api listening on {scheme}://{local}");
    tracing::info!(url = %format!("{scheme}://{local}"), "listening");
    let result = running
        .await
        .map_err(|e| StartupError(format!("server error: {e}")));
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = sweeper.await;
    result
}

/// The external database (`--database-url`), else the embedded one.
fn database_url(
    args: &ServeArgs,
    embedded: Option<&EmbeddedPostgres>,
) -> Result<String, StartupError> {
    match (args.database.external_url(), embedded) {
        (Some(url), _) => Ok(url),
        (None, Some(pg)) => Ok(pg.database_url()),
        (None, None) => Err(StartupError("no database".to_string())),
    }
}

/// What the handlers share: the pool and notifications, the secrets key, authentication and
/// the storage accounts.
fn app_state(
    args: &ServeArgs,
    pool: DbPool,
    hub: Arc<Hub>,
    timing: Timing,
) -> Result<web::Data<AppState>, StartupError> {
    let secrets = Arc::new(crate::storage::secrets::SecretsKey::load_or_create(
        &args.database.secrets_key_path(),
    )?);
    let auth = Arc::new(
        crate::auth::Auth::new(args.auth_config()?, pool.clone())
            .with_console_client_id(args.console_client_id.clone()),
    );
    if !auth.config.enabled {
        tracing::warn!(
            "authentication is DISABLED (--auth-disabled): anyone who can reach the server may do anything"
        );
    }
    invalidate_rbac_on_change(&hub, auth.clone());
    Ok(web::Data::new(AppState {
        pool,
        hub,
        timing,
        public_url: args.public_url.clone(),
        page_size: args.page_size.max(1),
        default_location: args.location.clone(),
        metrics: Arc::new(Metrics::default()),
        auth,
        secrets: secrets.clone(),
        storage: crate::storage::accounts::Registry::new(
            secrets,
            std::time::Duration::from_secs(args.upload_sas_seconds.max(1)),
            std::time::Duration::from_secs(args.download_sas_seconds.max(1)),
        ),
    }))
}

/// Role assignment changes (from any process) drop the cached assignments at once.
fn invalidate_rbac_on_change(hub: &Arc<Hub>, auth: Arc<crate::auth::Auth>) {
    let mut sub = hub.subscribe(crate::auth::rbac::RBAC_KEY);
    tokio::spawn(async move {
        loop {
            if sub.changed(std::time::Duration::from_secs(3600)).await {
                auth.rbac.invalidate();
            }
        }
    });
}

/// Waits for SIGTERM or SIGINT, then closes the hub.
async fn close_on_signal(hub: &Hub) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot watch for SIGTERM: long polls delay shutdown");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    hub.close();
}

/// The listening socket and the address it got (`--listen` may ask for port 0).
fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| StartupError(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartupError(format!("cannot read the listening address: {e}")))?;
    Ok((listener, local))
}

/// Starts serving on `listener`, over HTTPS when `--tls-cert` and `--tls-key` are given; the
/// running server and its scheme.
///
/// Built from actix's parts rather than with `HttpServer`, whose connections cannot be wrapped:
/// each connection goes through [`http1::Guarded`], so that requests the HTTP layer refuses get
/// ARM errors too. The settings are `HttpServer`'s defaults.
fn run_server(
    args: &ServeArgs,
    state: &web::Data<AppState>,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> Result<(Server, &'static str), StartupError> {
    use actix_service::{ServiceFactoryExt, fn_service};
    use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
    use actix_web::rt::net::TcpStream;

    let addr = listener
        .local_addr()
        .map_err(|e| StartupError(format!("cannot read the listening address: {e}")))?;
    let mut builder = actix_server::Server::build().shutdown_timeout(10);
    if let Some(workers) = args.workers {
        builder = builder.workers(workers.max(1));
    }
    let shutdown = builder.graceful_shutdown_signal();
    let state = state.clone();
    let scheme = match tls {
        Some(mut tls) => {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = Acceptor::new(tls);
            builder = builder
                .listen("capture-api", listener, move || {
                    let guard = guard(&state);
                    acceptor
                        .clone()
                        .map_err(|_| ())
                        .and_then(fn_service(move |io: TlsStream<TcpStream>| {
                            let peer = io.get_ref().0.peer_addr().ok();
                            std::future::ready(Ok::<_, ()>((guard(io), Protocol::Http1, peer)))
                        }))
                        .and_then(http(&state, true, addr, &shutdown).map_err(|_| ()))
                })
                .map_err(|e| StartupError(format!("cannot serve HTTPS: {e}")))?;
            "https"
        }
        _ => {
            builder = builder
                .listen("capture-api", listener, move || {
                    let guard = guard(&state);
                    fn_service(move |io: TcpStream| {
                        let peer = io.peer_addr().ok();
                        std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                            guard(io),
                            Protocol::Http1,
                            peer,
                        )))
                    })
                    .and_then(http(&state, false, addr, &shutdown))
                })
                .map_err(|e| StartupError(format!("cannot serve HTTP: {e}")))?;
            "http"
        }
    };
    Ok((builder.run(), scheme))
}

/// How long a connection may take to send its first request head (`HttpServer`'s default).
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One worker's connection guard: wraps a client connection in [`http1::Guarded`].
fn guard<T>(state: &web::Data<AppState>) -> impl Fn(T) -> http1::Guarded<T> + Clone + use<T> {
    // One per worker: it runs a clock task.
    let config = actix_http::ServiceConfig::default();
    let metrics = state.metrics.clone();
    move |io| http1::Guarded::new(io, config.clone(), HEAD_TIMEOUT, Some(metrics.clone()))
}

/// One worker's HTTP/1.1 service over connections of type `T`, with `HttpServer`'s defaults.
fn http<T>(
    state: &web::Data<AppState>,
    secure: bool,
    addr: SocketAddr,
    shutdown: &actix_server::GracefulShutdownSignal,
) -> impl ServiceFactory<
    (T, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
> + use<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    use actix_service::{IntoServiceFactory, map_config};
    let shutdown = shutdown.clone();
    let host = addr.to_string();
    let app = app(state.clone()).into_factory();
    actix_http::HttpService::build()
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .keep_alive(actix_http::KeepAlive::default())
        // The first request head's deadline is kept by `http1::Guarded` (an ARM 408).
        .client_request_timeout(std::time::Duration::ZERO)
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .local_addr(addr)
        // `AppConfig::new` is private to actix-web; this is the constructor its own test server
        // uses. `secure` gives requests their scheme (for the absolute URLs we hand out).
        .finish(map_config(app, move |_| {
            actix_web::dev::AppConfig::__priv_test_new(secure, host.clone(), addr)
        }))
}

/// One worker's application: every route, the OpenAPI document and Swagger UI, and the
/// middleware.
fn app(
    app_state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let (app, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::configure)
        .split_for_parts();
    app.app_data(app_state.clone())
        // What the authentication middleware and extractors read.
        .app_data(web::Data::from(app_state.auth.clone()))
        .app_data(web::Data::from(app_state.metrics.clone()))
        // One per worker thread: coalesced readers wake each other without crossing threads.
        .app_data(web::Data::new(CaptureReads::default()))
        .app_data(web::PayloadConfig::new(crate::middleware::MAX_BODY_BYTES))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api))
        // The web console (`/` and its assets): public files, outside the OpenAPI document.
        .configure(crate::routes::console::configure)
        // `/docs` without its slash: where people type it.
        .route(
            "/docs",
            web::get().to(|| async {
                actix_web::HttpResponse::PermanentRedirect()
                    .insert_header(("Location", "/docs/"))
                    .finish()
            }),
        )
        .wrap(from_fn(crate::auth::authenticate))
        .wrap(from_fn(crate::middleware::arm_envelope))
}

async fn migrate_with_retry(database_url: &str) -> Result<(), StartupError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // What retrying cannot fix (a bad URL, an unknown host, a wrong password) fails now.
        let reached = crate::db::diagnose::check(database_url).await;
        let error = match reached {
            Ok(()) => match crate::db::migrate(database_url).await {
                Ok(applied) => {
                    for m in applied {
                        tracing::info!(migration = %m, "migration applied");
                    }
                    return Ok(());
                }
                Err(e) => e.0,
            },
            Err(e) if !e.transient => return Err(StartupError(e.message)),
            Err(e) => e.message,
        };
        if std::time::Instant::now() >= deadline {
            return Err(StartupError(format!("{error} (gave up after 30 s)")));
        }
        tracing::warn!(%error, "database not ready; retrying");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
