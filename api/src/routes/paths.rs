//! Typed path extractors: a handler names what its path addresses and the action it performs
//! there (`CapturePath<CaptureStop>`); the extractor validates the path's scope, authorizes the
//! caller for that action at that scope, and can then load or lock what the path names.
//!
//! Authorization comes before any lookup, so a denial tells nothing about what exists.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest, web};
use diesel_async::AsyncPgConnection;

use crate::arm::ids;
use crate::arm::models::WATCHER_TYPE;
use crate::auth::{Caller, actions};
use crate::db::models::{CaptureRow, WatcherRow};
use crate::db::watchers::Lock;
use crate::error::{ApiError, ApiResult};
use crate::limits::shown;
use crate::state::AppState;

/// An RBAC action, as a type.
pub trait Action {
    const NAME: &'static str;
    /// A list: the caller needs `NAME` at the scope or on something below it (what it may
    /// not read is filtered out by the handler), as ARM lists do.
    const LIST: bool = false;
}

macro_rules! action {
    ($($(#[$doc:meta])* $name:ident = $value:path;)+) => {
        $($(#[$doc])* pub struct $name; impl Action for $name { const NAME: &'static str = $value; })+
    };
}

action! {
    WatcherRead = actions::WATCHER_READ;
    WatcherWrite = actions::WATCHER_WRITE;
    WatcherDelete = actions::WATCHER_DELETE;
    /// Reads of captures: GET, list, and download.
    CaptureRead = actions::CAPTURE_READ;
    CaptureWrite = actions::CAPTURE_WRITE;
    CaptureDelete = actions::CAPTURE_DELETE;
    CaptureStop = actions::CAPTURE_STOP;
    CaptureQueryStatus = actions::CAPTURE_QUERY_STATUS;
}

/// Lists of captures: `CAPTURE_READ` at the watcher, or on one of its captures.
pub struct CaptureList;

impl Action for CaptureList {
    const NAME: &'static str = actions::CAPTURE_READ;
    const LIST: bool = true;
}

type Extracting<T> = Pin<Box<dyn Future<Output = ApiResult<T>>>>;

/// Validates `{subscriptionId}` (and `{resourceGroupName}`).
pub fn check_scope(subscription: &str, resource_group: Option<&str>) -> ApiResult<()> {
    ids::validate_subscription(subscription)?;
    if let Some(rg) = resource_group {
        ids::validate_resource_group(rg)?;
    }
    Ok(())
}

/// Checks the `{vmName}` of a virtual machine read: a name no machine can have answers 404
/// `ResourceNotFound` without a lookup.
pub fn check_vm_name(resource_group: &str, vm: &str) -> ApiResult<()> {
    if ids::is_compute_name(vm) {
        return Ok(());
    }
    Err(ApiError::resource_not_found(
        &format!(
            "Microsoft.Compute/virtualMachines/{}",
            shown(vm).escape_default()
        ),
        resource_group,
    ))
}

/// ARM id of a network watcher, as the request named it (an authorization scope).
pub fn watcher_scope(subscription: &str, rg: &str, nw: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.Network/networkWatchers/{nw}"
    )
}

fn watcher_not_found(rg: &str, name: &str) -> ApiError {
    ApiError::resource_not_found(&format!("Microsoft.Network/networkWatchers/{name}"), rg)
}

/// Checks a resource name of the path: a name no resource can have (control characters, too
/// long, …) never reaches the database. A request that would create, change or delete a
/// resource of that name (PUT, PATCH, DELETE) answers 400 `InvalidResourceName`; one that reads
/// it (GET, POST actions) 404 `ResourceNotFound`, as for any name that names nothing.
/// `type_path` is what precedes the name in the not-found message (e.g.
/// `Microsoft.Network/networkWatchers`), `what` the resource's kind in words.
pub fn check_path_name(
    method: &Method,
    resource_group: &str,
    type_path: &str,
    what: &str,
    name: &str,
) -> ApiResult<()> {
    if ids::is_resource_name(name) {
        return Ok(());
    }
    if matches!(*method, Method::PUT | Method::PATCH | Method::DELETE) {
        return ids::validate_resource_name(name, what);
    }
    Err(ApiError::resource_not_found(
        &format!("{type_path}/{}", shown(name).escape_default()),
        resource_group,
    ))
}

/// What `…/networkWatchers/{networkWatcherName}` names.
#[derive(Debug, Clone)]
pub struct WatcherAddress {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl WatcherAddress {
    /// ARM id of the watcher as the request named it.
    pub fn scope(&self) -> String {
        watcher_scope(&self.subscription, &self.resource_group, &self.name)
    }

    pub fn identity(&self) -> String {
        crate::db::watchers::identity(&self.subscription, &self.resource_group, &self.name)
    }

    /// The watcher (held as `lock` says), or a 404 naming it.
    pub async fn fetch(&self, conn: &mut AsyncPgConnection, lock: Lock) -> ApiResult<WatcherRow> {
        self.fetch_if_exists(conn, lock)
            .await?
            .ok_or_else(|| watcher_not_found(&self.resource_group, &self.name))
    }

    pub async fn fetch_if_exists(
        &self,
        conn: &mut AsyncPgConnection,
        lock: Lock,
    ) -> ApiResult<Option<WatcherRow>> {
        Ok(WatcherRow::find(
            conn,
            &self.subscription,
            &self.resource_group,
            &self.name,
            lock,
        )
        .await?)
    }
}

/// What `…/networkWatchers/{nw}/packetCaptures/{packetCaptureName}` names.
#[derive(Debug, Clone)]
pub struct CaptureAddress {
    pub watcher: WatcherAddress,
    pub name: String,
}

impl CaptureAddress {
    /// ARM id of the capture as the request named it.
    pub fn scope(&self) -> String {
        format!("{}/packetCaptures/{}", self.watcher.scope(), self.name)
    }

    /// Case-insensitive key of the capture (for read coalescing).
    pub fn key(&self) -> String {
        let w = &self.watcher;
        ids::key(&format!(
            "{}/{}/{}/{}",
            w.subscription, w.resource_group, w.name, self.name
        ))
    }

    /// The capture, in one round trip with its watcher; a 404 names what is missing.
    pub async fn fetch(&self, conn: &mut AsyncPgConnection) -> ApiResult<CaptureRow> {
        let w = &self.watcher;
        let found = CaptureRow::find_by_path(
            conn,
            &w.subscription,
            &w.resource_group,
            &w.name,
            &self.name,
        )
        .await?;
        match found {
            Some(c) => Ok(c),
            // Tell a missing watcher from a missing capture.
            None => Err(self.not_found(&w.fetch(conn, Lock::None).await?)),
        }
    }

    /// The capture of `watcher`, locked until the transaction ends (the writers' read).
    pub async fn lock(
        &self,
        conn: &mut AsyncPgConnection,
        watcher: &WatcherRow,
    ) -> ApiResult<Option<CaptureRow>> {
        Ok(CaptureRow::lock(conn, watcher, &self.name).await?)
    }

    pub fn not_found(&self, watcher: &WatcherRow) -> ApiError {
        ApiError::resource_not_found(
            &format!(
                "Microsoft.Network/networkWatchers/{}/packetCaptures/{}",
                watcher.name, self.name
            ),
            &watcher.resource_group,
        )
    }
}

/// A path of `T`, whose caller is authorized for `A` at its scope.
pub struct Authorized<T, A> {
    pub address: T,
    pub caller: Caller,
    _action: PhantomData<A>,
}

impl<T, A> std::ops::Deref for Authorized<T, A> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.address
    }
}

/// `…/networkWatchers/{networkWatcherName}`, authorized for `A` at the watcher.
pub type WatcherPath<A> = Authorized<WatcherAddress, A>;
/// `…/packetCaptures/{packetCaptureName}`, authorized for `A` at the capture.
pub type CapturePath<A> = Authorized<CaptureAddress, A>;

/// Builds an address from a request's path (validated), and names its authorization scope.
pub trait Address: Sized + 'static {
    fn from_path(req: &HttpRequest) -> Extracting<Self>;
    fn authorization_scope(&self) -> String;
}

impl Address for WatcherAddress {
    fn from_path(req: &HttpRequest) -> Extracting<Self> {
        let parts = web::Path::<(String, String, String)>::extract(req);
        let method = req.method().clone();
        Box::pin(async move {
            let (subscription, resource_group, name) = parts
                .await
                .map_err(|e| ApiError::internal(format!("path: {e}")))?
                .into_inner();
            check_scope(&subscription, Some(&resource_group))?;
            check_path_name(
                &method,
                &resource_group,
                WATCHER_TYPE,
                "network watcher",
                &name,
            )?;
            Ok(WatcherAddress {
                subscription,
                resource_group,
                name,
            })
        })
    }

    fn authorization_scope(&self) -> String {
        self.scope()
    }
}

/// The watcher and the child's name of a path `…/networkWatchers/{nw}/{children}/{name}`, both
/// names checked (the watcher only as read: a child under a watcher that cannot exist is not
/// found); `label` names the child in messages.
pub fn watcher_child(
    req: &HttpRequest,
    children: &'static str,
    label: &'static str,
) -> Extracting<(WatcherAddress, String)> {
    let parts = web::Path::<(String, String, String, String)>::extract(req);
    let method = req.method().clone();
    Box::pin(async move {
        let (subscription, resource_group, watcher, name) = parts
            .await
            .map_err(|e| ApiError::internal(format!("path: {e}")))?
            .into_inner();
        check_scope(&subscription, Some(&resource_group))?;
        check_path_name(
            &Method::GET,
            &resource_group,
            WATCHER_TYPE,
            "network watcher",
            &watcher,
        )?;
        check_path_name(
            &method,
            &resource_group,
            &format!("{WATCHER_TYPE}/{watcher}/{children}"),
            label,
            &name,
        )?;
        let watcher = WatcherAddress {
            subscription,
            resource_group,
            name: watcher,
        };
        Ok((watcher, name))
    })
}

impl Address for CaptureAddress {
    fn from_path(req: &HttpRequest) -> Extracting<Self> {
        let child = watcher_child(req, "packetCaptures", "packet capture");
        Box::pin(async move {
            let (watcher, name) = child.await?;
            Ok(CaptureAddress { watcher, name })
        })
    }

    fn authorization_scope(&self) -> String {
        self.scope()
    }
}

impl<T: Address, A: Action + 'static> FromRequest for Authorized<T, A> {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let address = T::from_path(req);
        let caller = Caller::from_request(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let address = address.await?;
            let caller = caller.await?;
            let state = state.ok_or_else(|| ApiError::internal("no application state"))?;
            let scope = address.authorization_scope();
            if A::LIST {
                let _readable = caller.list_filter(&state.auth, A::NAME, &scope).await?;
            } else {
                caller.authorize(&state.auth, A::NAME, &scope).await?;
            }
            Ok(Authorized {
                address,
                caller,
                _action: PhantomData,
            })
        })
    }
}
