//! Builds and runs the HTTP server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
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
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        StartupError(format!(
            "cannot read the private key {}: {e}",
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

/// Runs `capture-api serve` until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), StartupError> {
    let embedded = match args.database.external_url() {
        Some(_) => None,
        None => Some(EmbeddedPostgres::start(&args.database.data_dir).await?),
    };
    let result = serve_with(&args, embedded.as_ref()).await;
    if let Some(pg) = &embedded {
        pg.stop().await;
    }
    result
}

async fn serve_with(
    args: &ServeArgs,
    embedded: Option<&EmbeddedPostgres>,
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
    let (listener, local) = bind(args.listen)?;
    let (running, scheme) = run_server(args, &state, listener)?;
    if embedded.is_some() && state.auth.config.enabled {
        first_start_principal(&state, args).await;
    }
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
    let auth = Arc::new(crate::auth::Auth::new(args.auth_config()?, pool.clone()));
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
fn run_server(
    args: &ServeArgs,
    state: &web::Data<AppState>,
    listener: TcpListener,
) -> Result<(Server, &'static str), StartupError> {
    let app_state = state.clone();
    let mut server = HttpServer::new(move || app(app_state.clone())).shutdown_timeout(10);
    if let Some(workers) = args.workers {
        server = server.workers(workers.max(1));
    }
    let scheme = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            server = server
                .listen_rustls_0_23(listener, tls_config(cert, key)?)
                .map_err(|e| StartupError(format!("cannot serve HTTPS: {e}")))?;
            "https"
        }
        _ => {
            server = server
                .listen(listener)
                .map_err(|e| StartupError(format!("cannot serve HTTP: {e}")))?;
            "http"
        }
    };
    Ok((server.run(), scheme))
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
        .wrap(from_fn(crate::auth::authenticate))
        .wrap(from_fn(crate::middleware::arm_envelope))
}

async fn migrate_with_retry(database_url: &str) -> Result<(), StartupError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match crate::db::migrate(database_url).await {
            Ok(applied) => {
                for m in applied {
                    tracing::info!(migration = %m, "migration applied");
                }
                return Ok(());
            }
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not ready; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
