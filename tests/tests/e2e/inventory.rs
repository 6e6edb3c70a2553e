//! The inventory lists a console reads: registered virtual machines, scale sets and their
//! instances (Microsoft.Compute), and registered storage accounts (Microsoft.Storage), in ARM's
//! list shape with paging, case-insensitive scopes, RBAC filtering, and never a key.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_tests::{Api, ScriptedAgent};
use serde_json::{Value, json};

use crate::Ctx;

const COMPUTE: &str = "api-version=2024-07-01";
const STORAGE: &str = "api-version=2024-01-01";
/// Azurite's published development key: a well-formed account key that must never show.
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const KEY_ENV: &str = "INVENTORY_TEST_ACCOUNT_KEY_VARIABLE";
const KEY_FILE: &str = "/nonexistent/inventory-test-account.key";

fn compute(sub: &str, rg: Option<&str>, what: &str) -> String {
    match rg {
        Some(rg) => format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/{what}?{COMPUTE}"
        ),
        None => format!("/subscriptions/{sub}/providers/Microsoft.Compute/{what}?{COMPUTE}"),
    }
}

fn storage(sub: &str, rg: Option<&str>) -> String {
    match rg {
        Some(rg) => format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts?{STORAGE}"
        ),
        None => {
            format!("/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts?{STORAGE}")
        }
    }
}

fn scale_set_instance(sub: &str, rg: &str, ss: &str, i: u32) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{ss}/virtualMachines/{i}"
    )
}

fn storage_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

/// No key material, nor where a key is kept, in a response.
fn assert_no_key_material(text: &str) {
    for secret in [
        ACCOUNT_KEY,
        KEY_ENV,
        KEY_FILE,
        "keySealed",
        "key_sealed",
        "credential",
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
}

/// Every item of a list, following `nextLink`; and the number of pages.
async fn all_pages(api: &Api, first: &str) -> (Vec<Value>, usize) {
    let mut items = vec![];
    let mut url = first.to_string();
    let mut pages = 0;
    loop {
        let r = api.get(&url).await;
        assert_eq!(r.status.as_u16(), 200, "{url}: {}", r.text);
        assert_no_key_material(&r.text);
        pages += 1;
        assert!(pages < 50, "too many pages");
        items.extend(r.body["value"].as_array().expect("value").iter().cloned());
        match r.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("$skiptoken="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    (items, pages)
}

fn names(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn add_account(ctx: &Ctx, id: &str, args: &[&str], stdin: &str) {
    let mut all = vec![
        "add",
        "--id",
        id,
        "--blob-endpoint",
        "http://127.0.0.1:1/acct",
        "--offline",
    ];
    all.extend_from_slice(args);
    let (ok, out, err) = ctx.server.storage_accounts(&all, stdin);
    assert!(ok, "{out}{err}");
}

/// Machines in two resource groups (and another subscription), scale set instances, and
/// storage accounts of both tiers; the caller is the harness's Owner.
struct World {
    ctx: Ctx,
    _agents: Vec<ScriptedAgent>,
}

async fn world(page_size: u64) -> World {
    let ctx = Ctx::with(|o| o.page_size = page_size).await;
    let sub = ctx.sub.clone();
    let other_sub = e2e_tests::new_subscription();
    let url = ctx.server.url.clone();
    let mut agents = vec![];
    for (rg, vm) in [("rg1", "vm1"), ("rg1", "vm2"), ("Rg2", "vm3")] {
        agents.push(ScriptedAgent::register(&url, &e2e_tests::vm_id(&sub, rg, vm), "eastus").await);
    }
    agents.push(
        ScriptedAgent::register(&url, &e2e_tests::vm_id(&other_sub, "rg1", "vmx"), "eastus").await,
    );
    for (rg, ss, i) in [("rg1", "ss1", 0), ("rg1", "ss1", 1), ("rg2", "ss2", 7)] {
        agents.push(
            ScriptedAgent::register(&url, &scale_set_instance(&sub, rg, ss, i), "westus").await,
        );
    }
    add_account(
        &ctx,
        &storage_id(&sub, "rg1", "std1"),
        &["--key-stdin"],
        ACCOUNT_KEY,
    );
    add_account(
        &ctx,
        &storage_id(&sub, "rg1", "std2"),
        &["--key-env", KEY_ENV],
        "",
    );
    add_account(
        &ctx,
        &storage_id(&sub, "Rg2", "prem1"),
        &["--key-file", KEY_FILE, "--premium"],
        "",
    );
    add_account(
        &ctx,
        &storage_id(&other_sub, "rg1", "elsewhere1"),
        &["--key-stdin"],
        ACCOUNT_KEY,
    );
    World {
        ctx,
        _agents: agents,
    }
}

#[tokio::test]
async fn lists_registered_machines_at_both_scopes_in_pages() {
    let w = world(2).await;
    let (ctx, sub) = (&w.ctx, w.ctx.sub.as_str());

    // The subscription's VMs: not the scale set instances, not the other subscription's.
    let (vms, pages) = all_pages(&ctx.api, &compute(sub, None, "virtualMachines")).await;
    assert_eq!(names(&vms), set(&["vm1", "vm2", "vm3"]), "{vms:?}");
    assert_eq!(pages, 2, "page size 2");
    let vm1 = vms.iter().find(|v| v["name"] == "vm1").unwrap();
    assert_eq!(vm1["id"], e2e_tests::vm_id(sub, "rg1", "vm1"));
    assert_eq!(vm1["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(vm1["location"], "eastus");
    let p = &vm1["properties"];
    assert_eq!(p["provisioningState"], "Succeeded");
    assert_eq!(p["hostname"], "test-host");
    assert_eq!(p["os"], "Linux");
    assert_eq!(p["agentVersion"], "scripted");
    assert_eq!(p["agentStatus"], "Connected");
    assert_eq!(p["interfaces"], serde_json::json!(["lo"]));
    for field in ["lastSeen", "registeredAt"] {
        let t = p[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{field}: {t}"
        );
    }

    // A resource group, in any casing.
    for rg in ["rg1", "RG1"] {
        let (vms, _) = all_pages(&ctx.api, &compute(sub, Some(rg), "virtualMachines")).await;
        assert_eq!(names(&vms), set(&["vm1", "vm2"]));
    }
    let (vms, _) = all_pages(
        &ctx.api,
        &compute(&sub.to_uppercase(), Some("rg2"), "virtualMachines"),
    )
    .await;
    assert_eq!(names(&vms), set(&["vm3"]));
    assert_eq!(
        vms[0]["id"],
        e2e_tests::vm_id(sub, "Rg2", "vm3"),
        "the casing of registration"
    );
    let (vms, _) = all_pages(&ctx.api, &compute(sub, Some("rg3"), "virtualMachines")).await;
    assert!(vms.is_empty());

    // A revoked agent shows as such.
    ctx.server.cli(&[
        "agents",
        "revoke",
        "--machine-id",
        &e2e_tests::vm_id(sub, "rg1", "vm2"),
    ]);
    let (vms, _) = all_pages(&ctx.api, &compute(sub, Some("rg1"), "virtualMachines")).await;
    let vm2 = vms.iter().find(|v| v["name"] == "vm2").unwrap();
    assert_eq!(vm2["properties"]["agentStatus"], "Revoked");

    // Scale sets, with their instance counts and the link to their instances.
    let (sets, pages) = all_pages(&ctx.api, &compute(sub, None, "virtualMachineScaleSets")).await;
    assert_eq!(names(&sets), set(&["ss1", "ss2"]));
    assert_eq!(pages, 1);
    let ss1 = sets.iter().find(|s| s["name"] == "ss1").unwrap();
    assert_eq!(
        ss1["id"],
        format!(
            "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1"
        )
    );
    assert_eq!(ss1["type"], "Microsoft.Compute/virtualMachineScaleSets");
    assert_eq!(ss1["location"], "westus");
    assert_eq!(ss1["properties"]["registeredInstances"], 2);
    assert_eq!(ss1["properties"]["connectedInstances"], 2);
    let link = ss1["properties"]["instancesLink"].as_str().unwrap();
    assert!(
        link.ends_with("/virtualMachineScaleSets/ss1/virtualMachines?api-version=2024-07-01"),
        "{link}"
    );
    let (instances, pages) = all_pages(&ctx.api, link).await;
    assert_eq!(names(&instances), set(&["ss1_0", "ss1_1"]));
    assert_eq!(pages, 1, "2 instances in a page of 2");
    let i0 = instances.iter().find(|i| i["instanceId"] == "0").unwrap();
    assert_eq!(i0["id"], scale_set_instance(sub, "rg1", "ss1", 0));
    assert_eq!(
        i0["type"],
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
    );
    assert_eq!(i0["properties"]["agentStatus"], "Connected");
    let (sets, _) = all_pages(
        &ctx.api,
        &compute(sub, Some("RG2"), "virtualMachineScaleSets"),
    )
    .await;
    assert_eq!(names(&sets), set(&["ss2"]));
    assert_eq!(sets[0]["properties"]["registeredInstances"], 1);
    let (instances, _) = all_pages(
        &ctx.api,
        &compute(
            sub,
            Some("rg2"),
            "virtualMachineScaleSets/SS2/virtualMachines",
        ),
    )
    .await;
    assert_eq!(names(&instances), set(&["ss2_7"]));
    // A scale set without registered instances, or whose name no scale set can have.
    ctx.api
        .get(&compute(
            sub,
            Some("rg1"),
            "virtualMachineScaleSets/ss9/virtualMachines",
        ))
        .await
        .assert_error(404, "ResourceNotFound");
    ctx.api
        .get(&compute(
            sub,
            Some("rg1"),
            "virtualMachineScaleSets/bad%00name/virtualMachines",
        ))
        .await
        .assert_error(404, "ResourceNotFound");

    // ARM errors before anything is looked up.
    ctx.api
        .get(&compute("not-a-guid", None, "virtualMachines"))
        .await
        .assert_error(400, "InvalidSubscriptionId");
    ctx.api
        .get(&compute(sub, Some("bad.rg."), "virtualMachineScaleSets"))
        .await
        .assert_error(400, "InvalidResourceGroupName");
    ctx.api
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"
        ))
        .await
        .assert_error(400, "MissingApiVersionParameter");
    ctx.api
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{COMPUTE}&$skiptoken=%01"
        ))
        .await
        .assert_error(400, "InvalidParameter");
}

#[tokio::test]
async fn lists_registered_storage_accounts_with_their_tier_and_never_a_key() {
    let w = world(2).await;
    let (ctx, sub) = (&w.ctx, w.ctx.sub.as_str());

    let (accounts, pages) = all_pages(&ctx.api, &storage(sub, None)).await;
    assert_eq!(names(&accounts), set(&["std1", "std2", "prem1"]));
    assert_eq!(pages, 2, "page size 2");
    for a in &accounts {
        assert_eq!(a["type"], "Microsoft.Storage/storageAccounts");
        assert_eq!(a["kind"], "StorageV2");
        assert_eq!(a["properties"]["provisioningState"], "Succeeded");
        assert_eq!(
            a["properties"]["primaryEndpoints"]["blob"],
            "http://127.0.0.1:1/acct/"
        );
        let keys: BTreeSet<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["id", "kind", "name", "properties", "sku", "type"].into()
        );
        let props: BTreeSet<&str> = a["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            props,
            ["creationTime", "primaryEndpoints", "provisioningState"].into()
        );
    }
    let prem = accounts.iter().find(|a| a["name"] == "prem1").unwrap();
    assert_eq!(prem["id"], storage_id(sub, "Rg2", "prem1"));
    assert_eq!(
        prem["sku"],
        serde_json::json!({"name": "Premium_LRS", "tier": "Premium"})
    );
    let std1 = accounts.iter().find(|a| a["name"] == "std1").unwrap();
    assert_eq!(
        std1["sku"],
        serde_json::json!({"name": "Standard_LRS", "tier": "Standard"})
    );

    for rg in ["rg1", "RG1"] {
        let (accounts, _) = all_pages(&ctx.api, &storage(sub, Some(rg))).await;
        assert_eq!(names(&accounts), set(&["std1", "std2"]));
    }
    let (accounts, _) = all_pages(&ctx.api, &storage(sub, Some("rg2"))).await;
    assert_eq!(names(&accounts), set(&["prem1"]));

    // Microsoft.Storage api-versions only.
    let r = ctx
        .api
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts?api-version=2026-03-01"
        ))
        .await;
    r.assert_error(400, "InvalidApiVersionParameter");
    for v in ["2023-01-01", "2025-06-01"] {
        let r = ctx
            .api
            .get(&format!(
                "/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts?api-version={v}"
            ))
            .await;
        assert_eq!(r.status.as_u16(), 200, "{v}: {}", r.text);
    }
    ctx.api
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts"
        ))
        .await
        .assert_error(400, "MissingApiVersionParameter");
}

#[tokio::test]
async fn lists_show_only_what_the_caller_may_read() {
    let w = world(100).await;
    let (ctx, sub) = (&w.ctx, w.ctx.sub.as_str());
    let rg1 = format!("/subscriptions/{sub}/resourceGroups/rg1");

    // Reader on rg1: at the subscription, rg1's machines and accounts only; rg2 is refused.
    let (_, token) = ctx.principal(Some(("Reader", &rg1)));
    let reader = ctx.api.with_bearer(Some(&token));
    let (vms, _) = all_pages(&reader, &compute(sub, None, "virtualMachines")).await;
    assert_eq!(names(&vms), set(&["vm1", "vm2"]));
    let (vms, _) = all_pages(&reader, &compute(sub, Some("RG1"), "virtualMachines")).await;
    assert_eq!(names(&vms), set(&["vm1", "vm2"]));
    let (sets, _) = all_pages(&reader, &compute(sub, None, "virtualMachineScaleSets")).await;
    assert_eq!(names(&sets), set(&["ss1"]));
    let (instances, _) = all_pages(
        &reader,
        &compute(
            sub,
            Some("rg1"),
            "virtualMachineScaleSets/ss1/virtualMachines",
        ),
    )
    .await;
    assert_eq!(names(&instances), set(&["ss1_0", "ss1_1"]));
    let (accounts, _) = all_pages(&reader, &storage(sub, None)).await;
    assert_eq!(names(&accounts), set(&["std1", "std2"]));
    for url in [
        compute(sub, Some("rg2"), "virtualMachines"),
        compute(sub, Some("rg2"), "virtualMachineScaleSets"),
        compute(
            sub,
            Some("rg2"),
            "virtualMachineScaleSets/ss2/virtualMachines",
        ),
        storage(sub, Some("rg2")),
    ] {
        let r = reader.get(&url).await;
        let e = r.assert_error(403, "AuthorizationFailed");
        assert!(e["message"].as_str().unwrap().contains("/read"), "{e}");
    }

    // Reader on one scale set instance: that instance only.
    let (_, token) = ctx.principal(Some(("Reader", &scale_set_instance(sub, "rg1", "ss1", 1))));
    let one = ctx.api.with_bearer(Some(&token));
    let (instances, _) = all_pages(
        &one,
        &compute(
            sub,
            Some("rg1"),
            "virtualMachineScaleSets/ss1/virtualMachines",
        ),
    )
    .await;
    assert_eq!(names(&instances), set(&["ss1_1"]));
    let (vms, _) = all_pages(&one, &compute(sub, None, "virtualMachines")).await;
    assert!(vms.is_empty(), "{vms:?}");

    // Network Contributor reads no Microsoft.Compute or Microsoft.Storage resource (as in Azure).
    let (_, token) = ctx.principal(Some((
        "Network Contributor",
        &format!("/subscriptions/{sub}"),
    )));
    let network = ctx.api.with_bearer(Some(&token));
    for url in [
        compute(sub, None, "virtualMachines"),
        compute(sub, None, "virtualMachineScaleSets"),
        storage(sub, None),
    ] {
        network
            .get(&url)
            .await
            .assert_error(403, "AuthorizationFailed");
    }

    // No role: 403 everywhere, with the ARM error naming the action and scope.
    let (oid, token) = ctx.principal(None);
    let nobody = ctx.api.with_bearer(Some(&token));
    for (url, action, scope) in [
        (
            compute(sub, None, "virtualMachines"),
            "Microsoft.Compute/virtualMachines/read",
            format!("/subscriptions/{sub}"),
        ),
        (
            compute(sub, Some("rg1"), "virtualMachines"),
            "Microsoft.Compute/virtualMachines/read",
            rg1.clone(),
        ),
        (
            compute(sub, None, "virtualMachineScaleSets"),
            "Microsoft.Compute/virtualMachineScaleSets/read",
            format!("/subscriptions/{sub}"),
        ),
        (
            compute(
                sub,
                Some("rg1"),
                "virtualMachineScaleSets/ss1/virtualMachines",
            ),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
            format!("{rg1}/providers/Microsoft.Compute/virtualMachineScaleSets/ss1"),
        ),
        (
            storage(sub, None),
            "Microsoft.Storage/storageAccounts/read",
            format!("/subscriptions/{sub}"),
        ),
        (
            storage(sub, Some("rg1")),
            "Microsoft.Storage/storageAccounts/read",
            rg1.clone(),
        ),
    ] {
        let r = nobody.get(&url).await;
        let e = r.assert_error(403, "AuthorizationFailed");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains(&oid) && message.contains(action) && message.contains(&scope),
            "{message}"
        );
    }
    // Without a token: 401.
    let anonymous = ctx.api.with_bearer(None);
    let r = anonymous.get(&storage(sub, None)).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text);
}

#[tokio::test]
async fn a_lost_agent_shows_as_lost() {
    let ctx = Ctx::with(|o| o.agent_lost_seconds = 1).await;
    let sub = ctx.sub.clone();
    let _agent = ScriptedAgent::register(
        &ctx.server.url,
        &scale_set_instance(&sub, "rg1", "ss1", 0),
        "eastus",
    )
    .await;
    // It never polls: it is lost after a second (and a sweep).
    let url = compute(
        &sub,
        Some("rg1"),
        "virtualMachineScaleSets/ss1/virtualMachines",
    );
    e2e_tests::eventually(
        "the instance shows as lost",
        Duration::from_secs(20),
        || async {
            let r = ctx.api.get(&url).await;
            (r.body["value"][0]["properties"]["agentStatus"] == "Lost").then_some(())
        },
    )
    .await;
    let (sets, _) = all_pages(&ctx.api, &compute(&sub, None, "virtualMachineScaleSets")).await;
    assert_eq!(sets[0]["properties"]["registeredInstances"], 1);
    assert_eq!(sets[0]["properties"]["connectedInstances"], 0);
}

#[tokio::test]
async fn permissions_say_what_the_caller_may_do_at_a_scope() {
    let ctx = Ctx::new().await;
    let sub = ctx.sub.clone();
    let rg1 = format!("/subscriptions/{sub}/resourceGroups/rg1");
    let url = |rg: Option<&str>| match rg {
        None => format!(
            "/subscriptions/{sub}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"
        ),
        Some(rg) => format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"
        ),
    };
    let actions = |body: &Value| -> Vec<Vec<String>> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    // Network Contributor on rg1: nothing at the subscription, Microsoft.Network/* in rg1.
    let (_, token) = ctx.principal(Some(("Network Contributor", &rg1)));
    let api = ctx.api.with_bearer(Some(&token));
    let r = api.get(&url(None)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(actions(&r.body).is_empty(), "{}", r.text);
    let r = api.get(&url(Some("RG1"))).await;
    assert_eq!(actions(&r.body), [["Microsoft.Network/*"]], "{}", r.text);
    assert_eq!(r.body["value"][0]["notActions"], json!([]));
    // Reader on the subscription: reads and queryStatus, everywhere in it.
    let (_, token) = ctx.principal(Some(("Reader", &format!("/subscriptions/{sub}"))));
    let r = ctx
        .api
        .with_bearer(Some(&token))
        .get(&url(Some("rg1")))
        .await;
    assert_eq!(
        actions(&r.body),
        [[
            "*/read",
            "Microsoft.Network/networkWatchers/packetCaptures/queryStatus/action"
        ]],
        "{}",
        r.text
    );
    // The harness's owner; no token: 401; a bad subscription: 400.
    let r = ctx.api.get(&url(None)).await;
    assert_eq!(actions(&r.body), [["*"]], "{}", r.text);
    let r = ctx.api.with_bearer(None).get(&url(None)).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text);
    let r = ctx
        .api
        .get("/subscriptions/not-a-guid/providers/Microsoft.Authorization/permissions?api-version=2022-04-01")
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
}
