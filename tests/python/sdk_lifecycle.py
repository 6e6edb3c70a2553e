#!/usr/bin/env python3
"""End-to-end lifecycle check of the capture REST server with the UNCHANGED Azure SDK.

Drives azure.mgmt.network.NetworkManagementClient against our server (base_url) through
network watcher create/get/list, packet capture create/get/list/queryStatus/stop/delete and
network watcher delete. Exit code 0 on success; on the first failure prints "FAIL: ..." and
exits 1.

Environment:
  CAPTURE_API_URL    e.g. https://127.0.0.1:8443           (required, must be https)
  CAPTURE_API_CA     PEM file of the CA / self-signed cert  (required, TLS is verified)
  SUBSCRIPTION_ID, RESOURCE_GROUP, LOCATION, TARGET_VM_ID   (required)
  CAPTURE_TENANT_ID, CAPTURE_CLIENT_ID, CAPTURE_CLIENT_SECRET
                     a service principal of the server's built-in token issuer: the unchanged
                     azure-identity ClientSecretCredential gets tokens from the server itself
  CAPTURE_API_TOKEN  otherwise, a fixed bearer token
  CAPTURE_API_TRACE  "0" hides the per-request HTTP lines (default shown)
  SDK_TIMEOUT        overall deadline in seconds (default 180): LRO polling has no limit of its own
"""
import os
import signal
import sys
import time

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import __version__ as SDK_VERSION
from azure.mgmt.network.models import (
    NetworkWatcher,
    PacketCapture,
    PacketCaptureFilter,
    PacketCaptureStorageLocation,
)

NW, PC = "nw-sdk", "pc-sdk"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def step(msg):
    print(f"[sdk] {msg}", flush=True)


class StaticTokenCredential:
    """TokenCredential (and SupportsTokenInfo) returning a fixed bearer token."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None):
        return AccessTokenInfo(self._token, int(time.time()) + 3600)


def trace_response(pipeline_response):
    req, resp = pipeline_response.http_request, pipeline_response.http_response
    print(f"[sdk]     {req.method} {req.url} -> {resp.status_code}", flush=True)


def env(name, default=None):
    value = os.environ.get(name, default)
    if not value:
        raise Failure(f"environment variable {name} is required")
    return value


def expect_not_found(fn, what):
    try:
        fn()
    except ResourceNotFoundError as e:
        check(e.status_code == 404, f"{what}: expected HTTP 404, got {e.status_code}")
        return
    raise Failure(f"{what}: expected ResourceNotFoundError (404), but the call succeeded")


def run():
    url, ca = env("CAPTURE_API_URL"), env("CAPTURE_API_CA")
    sub, rg, loc = env("SUBSCRIPTION_ID"), env("RESOURCE_GROUP"), env("LOCATION")
    vm = env("TARGET_VM_ID")
    check(os.path.isfile(ca), f"CAPTURE_API_CA={ca} is not a file")
    step(f"azure-mgmt-network {SDK_VERSION}; server {url}; CA {ca}")

    hooks = {} if os.environ.get("CAPTURE_API_TRACE") == "0" else {"raw_response_hook": trace_response}
    if os.environ.get("CAPTURE_CLIENT_ID"):
        from azure.identity import ClientSecretCredential

        # The server is its own authority (Entra-shaped v2 endpoints under /{tenant}/).
        os.environ["REQUESTS_CA_BUNDLE"] = ca
        credential = ClientSecretCredential(
            env("CAPTURE_TENANT_ID"),
            env("CAPTURE_CLIENT_ID"),
            env("CAPTURE_CLIENT_SECRET"),
            authority=url,
            disable_instance_discovery=True,
            connection_verify=ca,
        )
        token = credential.get_token("https://management.azure.com/.default")
        step(f"token from the server's issuer, valid until {token.expires_on}")
    else:
        credential = StaticTokenCredential(env("CAPTURE_API_TOKEN"))
    client = NetworkManagementClient(
        credential,
        sub,
        base_url=url,
        connection_verify=ca,  # verify the server against this CA; never disabled
        polling_interval=0.2,  # used when the server sends no Retry-After
        retry_total=0,  # surface server errors at once instead of retrying them
        connection_timeout=10,
        read_timeout=30,
        **hooks,
    )
    nws, pcs = client.network_watchers, client.packet_captures

    # Network watcher
    step(f"network_watchers.create_or_update {rg}/{NW}")
    nw = nws.create_or_update(rg, NW, NetworkWatcher(location=loc))
    check(nw.provisioning_state == "Succeeded", f"watcher provisioning_state={nw.provisioning_state!r}")
    check(nw.name == NW, f"watcher name={nw.name!r}")
    got = nws.get(rg, NW)
    check(got.name == NW and got.location == loc, f"watcher get returned name={got.name!r} location={got.location!r}")
    check(got.provisioning_state == "Succeeded", f"watcher get provisioning_state={got.provisioning_state!r}")
    names = [w.name for w in nws.list(rg)]
    check(NW in names, f"network_watchers.list({rg}) = {names}, missing {NW}")
    names = [w.name for w in nws.list_all()]
    check(NW in names, f"network_watchers.list_all() = {names}, missing {NW}")
    step(f"watcher ok: id={got.id}")

    # Packet capture create (LRO)
    step(f"packet_captures.begin_create {NW}/{PC} target={vm}")
    params = PacketCapture(
        target=vm,
        storage_location=PacketCaptureStorageLocation(file_path="/var/captures/sdk.cap"),
        time_limit_in_seconds=60,
        filters=[PacketCaptureFilter(protocol="UDP", local_ip_address="127.0.0.1", local_port="9999")],
    )
    pc = pcs.begin_create(rg, NW, PC, params).result()
    check(pc is not None, "begin_create returned no result")
    check(pc.name == PC, f"capture name={pc.name!r}")
    check(pc.provisioning_state == "Succeeded", f"capture provisioning_state={pc.provisioning_state!r}")
    check(pc.target == vm, f"capture target={pc.target!r}")
    check(pc.bytes_to_capture_per_packet == 0, f"bytes_to_capture_per_packet={pc.bytes_to_capture_per_packet!r}")
    check(pc.total_bytes_per_session == 1073741824, f"total_bytes_per_session={pc.total_bytes_per_session!r}")
    check(pc.time_limit_in_seconds == 60, f"time_limit_in_seconds={pc.time_limit_in_seconds!r}")
    check(pc.target_type == "AzureVM", f"target_type={pc.target_type!r}")
    check(pc.storage_location and pc.storage_location.file_path == "/var/captures/sdk.cap",
          f"storage_location={pc.storage_location!r}")
    f = (pc.filters or [None])[0]
    check(f is not None and f.protocol == "UDP" and f.local_port == "9999", f"filters={pc.filters!r}")

    got = pcs.get(rg, NW, PC)
    check(got.as_dict() == pc.as_dict(), f"get differs from create:\n  get:    {got.as_dict()}\n  create: {pc.as_dict()}")
    names = [c.name for c in pcs.list(rg, NW)]
    check(PC in names, f"packet_captures.list = {names}, missing {PC}")

    status = pcs.begin_get_status(rg, NW, PC).result()
    check(status is not None, "begin_get_status returned no result")
    check(status.packet_capture_status == "Running", f"status={status.packet_capture_status!r} (want Running)")
    check(status.capture_start_time is not None, "capture_start_time not set")
    step(f"capture running since {status.capture_start_time}")

    # Stop
    step("packet_captures.begin_stop")
    pcs.begin_stop(rg, NW, PC).result()
    status = pcs.begin_get_status(rg, NW, PC).result()
    check(status.packet_capture_status == "Stopped", f"status={status.packet_capture_status!r} (want Stopped)")
    check(bool(status.stop_reason), f"stop_reason={status.stop_reason!r} (want non-empty)")
    step(f"capture stopped: stop_reason={status.stop_reason}")

    # Delete capture, then watcher
    step("packet_captures.begin_delete")
    pcs.begin_delete(rg, NW, PC).result()
    expect_not_found(lambda: pcs.get(rg, NW, PC), "packet_captures.get after delete")
    step(f"network_watchers.begin_delete {NW}")
    nws.begin_delete(rg, NW).result()
    expect_not_found(lambda: nws.get(rg, NW), "network_watchers.get after delete")


def on_timeout(signum, frame):
    raise Failure(f"no result within SDK_TIMEOUT={os.environ.get('SDK_TIMEOUT', '180')}s (LRO never finished?)")


def main():
    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(int(os.environ.get("SDK_TIMEOUT", "180")))
    try:
        run()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    except AzureError as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    print("[sdk] PASS: full lifecycle succeeded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
