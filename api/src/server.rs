//! Builds and runs the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ServeArgs;
use crate::embedded_pg::EmbeddedPostgres;
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::notify::Hub;
use crate::openapi::ApiDoc;
use crate::routes::{
    self, agent_files, agents, captures, downloads, identity, misc, operations, watchers,
};
use crate::state::{AppState, CaptureReads};

/// Every route, registered once for both the server and the OpenAPI document.
pub fn routes(cfg: &mut ServiceConfig) {
    // Matched in order: the hot paths (reads, monitors, agents' polls) come first.
    cfg.service(captures::get_capture)
        .service(captures::create)
        .service(captures::delete_capture)
        .service(captures::query_status)
        .service(captures::stop)
        .service(captures::list)
        .service(operations::operation_status)
        .service(operations::operation_result)
        .service(agents::poll)
        .service(agents::report)
        .service(agents::register)
        .service(agents::rotate_credential)
        .service(agent_files::upload_sas)
        .service(agent_files::upload_result)
        .service(agent_files::send_file)
        .service(agent_files::decline_file)
        .service(downloads::download)
        .service(downloads::content)
        .service(watchers::get_watcher)
        .service(watchers::create_or_update)
        .service(watchers::update_tags)
        .service(watchers::delete_watcher)
        .service(watchers::list_in_group)
        .service(watchers::list_in_subscription)
        .service(misc::get_vm)
        .service(misc::list_subscriptions)
        .service(identity::discovery)
        .service(identity::jwks)
        .service(identity::instance_discovery)
        .service(identity::cloud_metadata)
        .service(identity::token)
        .service(misc::healthz)
        .service(misc::readyz)
        .service(misc::metrics);
}

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

/// Runs `capture-api serve` until SIGTERM or SIGINT.
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
    let database_url = match (args.database.external_url(), embedded) {
        (Some(url), _) => url,
        (None, Some(pg)) => pg.database_url(),
        (None, None) => return Err(StartupError("no database".to_string())),
    };
    migrate_with_retry(&database_url).await?;
    let pool = crate::db::pool(&database_url, args.db_pool_size)?;
    let hub = Arc::new(Hub::default());
    tokio::spawn(hub.clone().listen(database_url.clone()));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let timing = args.timing();
    let sweeper = tokio::spawn(crate::sweeper::run(
        pool.clone(),
        timing.clone(),
        shutdown_rx,
    ));

    let secrets = Arc::new(crate::storage::secrets::SecretsKey::load_or_create(
        &args.database.secrets_key_path(),
    )?);
    let auth = Arc::new(crate::auth::Auth::new(args.auth_config()?, pool.clone()));
    if !auth.config.enabled {
        tracing::warn!(
            "authentication is DISABLED (--auth-disabled): anyone who can reach the server may do anything"
        );
    }
    // Role assignment changes (from any process) drop the cached assignments at once.
    {
        let mut sub = hub.subscribe(crate::auth::rbac::RBAC_KEY);
        let auth = auth.clone();
        tokio::spawn(async move {
            loop {
                if sub.changed(std::time::Duration::from_secs(3600)).await {
                    auth.rbac.invalidate();
                }
            }
        });
    }
    let state = web::Data::new(AppState {
        pool,
        hub,
        timing,
        public_url: args.public_url.clone(),
        page_size: args.page_size.max(1),
        default_location: args.location.clone(),
        metrics: Arc::new(Metrics::default()),
        auth: auth.clone(),
        secrets: secrets.clone(),
        storage: crate::storage::accounts::Registry::new(
            secrets.clone(),
            std::time::Duration::from_secs(args.upload_sas_seconds.max(1)),
            std::time::Duration::from_secs(args.download_sas_seconds.max(1)),
        ),
    });
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| StartupError(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartupError(format!("cannot read the listening address: {e}")))?;
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        let (app, api) = App::new()
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .configure(routes)
            .split_for_parts();
        app.app_data(app_state.clone())
            // One per worker thread: coalesced readers wake each other without crossing threads.
            .app_data(web::Data::new(CaptureReads::default()))
            .app_data(web::PayloadConfig::new(routes::MAX_BODY_BYTES))
            .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api))
            .wrap(from_fn(crate::auth::authenticate))
            .wrap(from_fn(crate::middleware::arm_envelope))
    })
    .shutdown_timeout(10);
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
    let running = server.run();
    // Scripts and tests wait for this line.
    if embedded.is_some() && state.auth.config.enabled {
        first_start_principal(&state, args).await;
    }
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
