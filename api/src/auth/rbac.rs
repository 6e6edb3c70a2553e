//! Authorization like Azure RBAC: role assignments (principal → scope → role), and what each
//! role may do. A scope covers itself and everything under it.
//!
//! Assignments are cached per principal; `capture-api role-assignments` changes wake every
//! replica through NOTIFY (key [`RBAC_KEY`]) and the caches are dropped at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::arm::ids;
use crate::db::schema::role_assignments;

/// Reads of scale sets, checked by the inventory lists (the other actions are in
/// [`crate::auth::actions`]). Reader, Contributor and Owner allow them, as any `…/read`.
pub const VMSS_READ: &str = "Microsoft.Compute/virtualMachineScaleSets/read";
/// Reads of scale set instances (`…/virtualMachineScaleSets/{ss}/virtualMachines`).
pub const VMSS_VM_READ: &str = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read";

/// Capture triggers (an extension of this service): reads (GET, list), writes (PUT,
/// `rotateSecret`) and deletes. Reader reads them (`*/read`); Owner, Contributor and Network
/// Contributor (`Microsoft.Network/*`) may do all three. A PUT also needs the capture write
/// right at the watcher and at each of its scopes, as the captures it creates would.
pub const TRIGGER_READ: &str = "Microsoft.Network/networkWatchers/captureTriggers/read";
pub const TRIGGER_WRITE: &str = "Microsoft.Network/networkWatchers/captureTriggers/write";
pub const TRIGGER_DELETE: &str = "Microsoft.Network/networkWatchers/captureTriggers/delete";

/// Hub key whose notification drops the caches.
pub const RBAC_KEY: &str = "rbac";
/// A cached principal's assignments are read again after this long in any case.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Contributor,
    NetworkContributor,
    Reader,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Owner,
        Role::Contributor,
        Role::NetworkContributor,
        Role::Reader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Contributor => "Contributor",
            Role::NetworkContributor => "Network Contributor",
            Role::Reader => "Reader",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        let k = s.replace([' ', '-', '_'], "").to_lowercase();
        Role::ALL
            .into_iter()
            .find(|r| r.name().replace(' ', "").to_lowercase() == k)
    }

    /// The role's actions as ARM lists them (`Microsoft.Authorization/permissions`); the same
    /// rule as [`Role::allows`].
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Role::Owner | Role::Contributor => &["*"],
            Role::NetworkContributor => &["Microsoft.Network/*"],
            Role::Reader => &[
                "*/read",
                "Microsoft.Network/networkWatchers/packetCaptures/queryStatus/action",
            ],
        }
    }

    /// Whether the role allows `action` (e.g. `Microsoft.Network/networkWatchers/packetCaptures/write`).
    pub fn allows(self, action: &str) -> bool {
        let a = action.to_lowercase();
        let is_read = a.ends_with("/read");
        match self {
            Role::Owner | Role::Contributor => true,
            Role::NetworkContributor => a.starts_with("microsoft.network/"),
            Role::Reader => {
                is_read
                    || a == "microsoft.network/networkwatchers/packetcaptures/querystatus/action"
            }
        }
    }
}

/// Normalised scope: lower case, no trailing slash; the root scope is "".
pub fn scope_key(scope: &str) -> String {
    ids::key(scope.trim().trim_end_matches('/'))
}

/// Whether an assignment at `assigned` covers `resource` (both [`scope_key`]s).
pub fn covers(assigned: &str, resource: &str) -> bool {
    assigned.is_empty()
        || resource == assigned
        || (resource.starts_with(assigned)
            && resource.as_bytes().get(assigned.len()) == Some(&b'/'))
}

/// Whether `scope` is one an assignment may have: the root, a subscription, a resource group or
/// a resource id.
pub fn valid_scope(scope: &str) -> bool {
    let k = scope_key(scope);
    if k.is_empty() {
        return true;
    }
    let parts: Vec<&str> = k.trim_start_matches('/').split('/').collect();
    k.starts_with("/subscriptions/")
        && !parts.iter().any(|p| p.is_empty())
        && (parts.len() == 2
            || parts.len() == 4 && parts[2] == "resourcegroups"
            || parts.len() >= 8)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = role_assignments)]
pub struct Assignment {
    pub id: Uuid,
    pub principal_id: String,
    pub scope: String,
    pub scope_key: String,
    pub role: String,
}

/// A principal's (scope key, role) pairs.
pub type Assignments = Arc<Vec<(String, Role)>>;

#[derive(Default)]
pub struct Rbac {
    cache: Mutex<HashMap<String, (Instant, Assignments)>>,
    /// Bumped by every invalidation: a read that began before one is not cached.
    generation: std::sync::atomic::AtomicU64,
}

impl Rbac {
    pub fn invalidate(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.clear();
    }

    /// The cached assignments of a principal, if fresh.
    pub fn cached(&self, principal: &str, app_id: Option<&str>) -> Option<Assignments> {
        let key = format!("{principal}|{}", app_id.unwrap_or(""));
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, a)| a.clone())
    }

    /// The (scope key, role) pairs of a principal, by object id or application id.
    pub async fn assignments(
        &self,
        conn: &mut AsyncPgConnection,
        principal: &str,
        app_id: Option<&str>,
    ) -> QueryResult<Assignments> {
        if let Some(a) = self.cached(principal, app_id) {
            return Ok(a);
        }
        let key = format!("{principal}|{}", app_id.unwrap_or(""));
        let generation = std::sync::atomic::AtomicU64::load(
            &self.generation,
            std::sync::atomic::Ordering::SeqCst,
        );
        let ids: Vec<&str> = std::iter::once(principal).chain(app_id).collect();
        let rows: Vec<(String, String)> = role_assignments::table
            .filter(role_assignments::principal_id.eq_any(ids))
            .select((role_assignments::scope_key, role_assignments::role))
            .load(conn)
            .await?;
        let list: Arc<Vec<(String, Role)>> = Arc::new(
            rows.into_iter()
                .filter_map(|(s, r)| Role::parse(&r).map(|r| (s, r)))
                .collect(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if std::sync::atomic::AtomicU64::load(&self.generation, std::sync::atomic::Ordering::SeqCst)
            == generation
        {
            cache.insert(key, (Instant::now(), list.clone()));
        }
        Ok(list)
    }
}

/// Whether these assignments allow `action` on the resource `scope`.
pub fn allowed(assignments: &[(String, Role)], action: &str, scope: &str) -> bool {
    let resource = scope_key(scope);
    assignments
        .iter()
        .any(|(s, role)| covers(s, &resource) && role.allows(action))
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    principal: &str,
    role: Role,
    scope: &str,
) -> QueryResult<Assignment> {
    let scope = if scope.trim() == "/" {
        "/"
    } else {
        scope.trim().trim_end_matches('/')
    };
    diesel::insert_into(role_assignments::table)
        .values((
            role_assignments::id.eq(Uuid::new_v4()),
            role_assignments::principal_id.eq(principal.trim().to_lowercase()),
            role_assignments::scope.eq(scope),
            role_assignments::scope_key.eq(scope_key(scope)),
            role_assignments::role.eq(role.name()),
        ))
        .on_conflict((
            role_assignments::principal_id,
            role_assignments::scope_key,
            role_assignments::role,
        ))
        .do_update()
        .set(role_assignments::scope.eq(scope))
        .returning(Assignment::as_returning())
        .get_result(conn)
        .await
}

pub async fn list(
    conn: &mut AsyncPgConnection,
    principal: Option<&str>,
) -> QueryResult<Vec<Assignment>> {
    let mut q = role_assignments::table
        .order((role_assignments::principal_id, role_assignments::scope_key))
        .select(Assignment::as_select())
        .into_boxed();
    if let Some(p) = principal {
        q = q.filter(role_assignments::principal_id.eq(p.trim().to_lowercase()));
    }
    q.load(conn).await
}

pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    Ok(diesel::delete(role_assignments::table.find(id))
        .execute(conn)
        .await?
        > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_what_is_under_them() {
        let rg = scope_key("/subscriptions/S/resourceGroups/RG1");
        assert!(covers(
            &rg,
            &scope_key(
                "/subscriptions/s/resourcegroups/rg1/providers/Microsoft.Network/networkWatchers/nw"
            )
        ));
        assert!(covers(&rg, &rg));
        assert!(!covers(
            &rg,
            &scope_key("/subscriptions/s/resourceGroups/rg10")
        ));
        assert!(!covers(&rg, &scope_key("/subscriptions/s")));
        assert!(covers("", &rg));
        assert!(valid_scope("/"));
        assert!(valid_scope("/subscriptions/s"));
        assert!(valid_scope("/subscriptions/s/resourceGroups/rg"));
        assert!(valid_scope(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkWatchers/nw"
        ));
        assert!(!valid_scope("/subscriptions/s/foo"));
        assert!(!valid_scope("subscriptions"));
    }

    #[test]
    fn roles_allow_their_actions() {
        let w = "Microsoft.Network/networkWatchers/packetCaptures/write";
        let r = "Microsoft.Network/networkWatchers/packetCaptures/read";
        let q = "Microsoft.Network/networkWatchers/packetCaptures/queryStatus/action";
        let vm = "Microsoft.Compute/virtualMachines/read";
        assert!(Role::Reader.allows(r) && Role::Reader.allows(q) && Role::Reader.allows(vm));
        assert!(!Role::Reader.allows(w));
        assert!(Role::NetworkContributor.allows(w) && !Role::NetworkContributor.allows(vm));
        assert!(Role::Owner.allows(w) && Role::Contributor.allows(vm));
        for a in [TRIGGER_READ, TRIGGER_WRITE, TRIGGER_DELETE] {
            assert!(Role::Owner.allows(a) && Role::Contributor.allows(a));
            assert!(Role::NetworkContributor.allows(a));
            assert_eq!(Role::Reader.allows(a), a == TRIGGER_READ);
        }
        assert_eq!(
            Role::parse("network contributor"),
            Some(Role::NetworkContributor)
        );
        assert_eq!(Role::parse("owner"), Some(Role::Owner));
        assert_eq!(Role::parse("admin"), None);
    }
}
