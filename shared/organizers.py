"""Operator commands for organizer connections: `python -m shared.organizers
list|find-hash|hash|revoke|connect-device`, most optionally for one tenant (`--tenant`). `list` shows each
organizer's `organizer_hash` (the one alerts and logs carry); `find-hash <hash>` names the organizer behind it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from shared.calendar_sync.keeper import organizer_key
from shared.common.ids import is_guid
from shared.common.vocabulary import MeetingKind
from shared.exceptions import JoinLinkError, SettingsError
from shared.identity.connect_flow import granted_scopes, signed_in_tenant
from shared.identity.msal import ClientType, MsalClients, MsalFailure
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry
from shared.identity.vault_acquirer import connect_scopes
from shared.identity.vault_blob import BlobTokenVault
from shared.redaction import hash_user
from shared.settings import Settings, load_settings

_PATH_SETTINGS = ("DEV_USERS_FILE", "TLS_CA_BUNDLE")


def settings_from(path: Path | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment, overridden by a local.settings.json-style file's `Values` if given."""
    values: dict[str, str] = {}
    if path is not None:
        doc = json.loads(path.read_text())
        values = {k: str(v) for k, v in doc.get("Values", doc).items()}
        for key in _PATH_SETTINGS:
            # Relative paths in the file mean relative to the file, wherever the command runs.
            if values.get(key) and not Path(values[key]).is_absolute():
                values[key] = str((path.parent / values[key]).resolve())
    # The file is named on the command line: it wins over whatever the shell happens to export.
    return load_settings({**environ, **values})


def list_organizers(vault: TokenVault, out: TextIO, *, as_json: bool = False, tenant: str | None = None,
                    calendar: Mapping[str, str] | None = None) -> int:
    """Print every organizer's connection health (of one tenant, if given); exit status 0, or 3 if any needs
    attention. `calendar` (MEETING_KIND=calendar): each organizer's subscription state by organizer key."""
    entries = sorted(vault.entries(tenant), key=lambda e: (e.tenant_id, e.upn.lower()))

    def followed(entry: VaultEntry) -> dict[str, str]:
        if calendar is None:
            return {}
        return {"calendar_subscription": calendar.get(organizer_key(entry.identity), "not subscribed yet")}

    if as_json:
        json.dump([{**e.health(), "organizer_hash": e.organizer_hash, **followed(e)} for e in entries], out,
                  indent=2)
        out.write("\n")
    elif not entries:
        where = f" in tenant {tenant}" if tenant else ""
        out.write(f"No organizer is connected{where}. Connect one with the connect page or `connect-device`.\n")
    else:
        out.write(f"{'ORGANIZER':<32} {'HASH':<16} {'TENANT':<36} {'STATUS':<16} {'LAST SUCCESS':<25} {'FAILS':>5}  "
                  "LAST ERROR\n")
        for e in entries:
            out.write(f"{e.upn:<32} {e.organizer_hash:<16} {e.tenant_id or '-':<36} {e.status:<16} "
                      f"{e.last_success_at or '-':<25} {e.consecutive_failures:>5}  {(e.last_error or '-')[:100]}\n")
        for e in entries if calendar is not None else []:
            out.write(f"Outlook changes of {e.upn}: {followed(e)['calendar_subscription']}\n")
    return 3 if any(e.status != ConnectionStatus.CONNECTED or e.consecutive_failures for e in entries) else 0


def find_hash(vault: TokenVault, value: str, out: TextIO) -> int:
    """Print the organizer(s) behind an `organizer_hash` from an alert or a log line; exit status 4 if none."""
    found = [e for e in vault.entries(None) if e.has_hash(value)]
    for e in found:
        out.write(f"{value}: {e.display_name} <{e.upn}> object id {e.oid} tenant {e.tenant_id or '-'} "
                  f"status {e.status}\n")
    if not found:
        out.write(f"{value}: no connected organizer has this hash (an organizer never connected is not in the "
                  "vault: hash a candidate with `python -m shared.organizers hash <upn or object id>`)\n")
    return 0 if found else 4


def revoke(vault: TokenVault, organizer: str, out: TextIO, tenant: str | None = None,
           unsubscribe: Callable[[str, str | None], bool] | None = None) -> int:
    """Delete the organizer's entry (the refresh token is forgotten); say what is left for an admin to do.

    `unsubscribe` (MEETING_KIND=calendar) first removes their calendar's change-notification subscription, while
    their token still works."""
    if unsubscribe is not None and vault.get(organizer, tenant) is not None:
        try:
            removed = unsubscribe(organizer, tenant)
        except JoinLinkError as exc:
            out.write(f"Their calendar subscription was not removed ({exc.reason}); Graph ends it at its expiry.\n")
        else:
            if removed:
                out.write("Removed their calendar's change-notification subscription.\n")
    entry = vault.delete(organizer, tenant)
    if entry is None:
        out.write(f"{organizer} has no entry in the token vault{f' in tenant {tenant}' if tenant else ''}; "
                  "nothing to revoke.\n")
        return 1
    out.write(
        f"Removed {entry.upn} ({entry.oid}) from the token vault: the app has forgotten the refresh token and "
        "cannot act for them any more. Their events are now rejected with reason organizer_not_connected.\n"
        "Access tokens already cached in running workers stay valid until they expire (at most about an hour).\n"
        "This does NOT revoke anything at Microsoft Entra ID. To end the grant there, an admin revokes the user's "
        "sessions (Entra admin center > Users > Revoke sessions, or Revoke-MgUserSignInSession) and, if wanted, "
        "removes the user's consent to the app (Enterprise applications > Permissions).\n")
    return 0


def connect_device(settings: Settings, vault: TokenVault, clients: MsalClients, expected: str | None,
                   out: TextIO, on_flow: Callable[[dict[str, Any]], None] | None = None,
                   tenant: str | None = None) -> int:
    """Device-code sign-in (no browser on this machine needed); the organizer's cache goes into the vault.
    With `tenant`, the sign-in happens at that tenant; otherwise where organizers sign in."""
    if tenant is not None and not settings.tenant_allowed(tenant):
        out.write(f"Tenant {tenant} is not on ENTRA_ALLOWED_TENANTS: its organizers cannot connect.\n")
        return 1

    def initiate(app: Any) -> dict[str, Any]:
        started: dict[str, Any] = app.initiate_device_flow(scopes=connect_scopes(settings))
        return started

    flow, _ = clients.run(ClientType.PUBLIC, None, initiate, tenant=tenant)
    if "user_code" not in flow:
        out.write(f"Could not start the device-code sign-in: {MsalFailure.from_result(flow).summary()}\n"
                  "The app registration must allow public client flows (Authentication > Advanced settings).\n")
        return 1
    out.write(f"{flow['message']}\nSign in as the organizer{f' ({expected})' if expected else ''}.\n")
    out.flush()
    if on_flow is not None:
        on_flow(flow)
    result, cache = clients.run(ClientType.PUBLIC, None, lambda app: app.acquire_token_by_device_flow(flow),
                                tenant=tenant)
    claims = result.get("id_token_claims") or {}
    if "access_token" not in result or not cache or not claims.get("oid"):
        out.write(f"Sign-in failed: {MsalFailure.from_result(result).summary()}\n")
        return 1
    signed_in = signed_in_tenant(result)
    if not settings.tenant_allowed(signed_in):
        out.write(f"Signed in with an account of tenant {signed_in or 'unknown'}, which is not on "
                  "ENTRA_ALLOWED_TENANTS: nothing stored.\n")
        return 1
    entry = VaultEntry.connected(claims, cache, ClientType.PUBLIC, granted_scopes(result))
    if expected and expected.strip().lower() not in (entry.oid, entry.upn.lower()):
        out.write(f"Signed in as {entry.upn}, not {expected}: nothing stored. Run the command again and sign in "
                  "as the organizer.\n")
        return 1
    vault.store_connection(entry)
    tenant_note = f" in tenant {entry.tenant_id}" if settings.is_multi_tenant else ""
    out.write(f"Connected {entry.display_name} ({entry.upn}){tenant_note}. Their appointments can now get join "
              "links.\n")
    return 0


def _subscription_states(settings: Settings) -> dict[str, str] | None:
    """With MEETING_KIND=calendar: each organizer's calendar subscription state, by organizer key."""
    if settings.meeting_kind != MeetingKind.CALENDAR:
        return None
    from shared.storage.subscriptions import TableSubscriptionStore

    async def read() -> dict[str, str]:
        store = TableSubscriptionStore(settings.storage, settings.appointments_table)
        try:
            return {row.organizer_key: row.state for row in await store.all()}
        finally:
            await store.aclose()

    return asyncio.run(read())


def _unsubscriber(settings: Settings) -> Callable[[str, str | None], bool] | None:
    """With MEETING_KIND=calendar: removes an organizer's subscription (as them, through the worker's services)."""
    if settings.meeting_kind != MeetingKind.CALENDAR:
        return None

    def unsubscribe(organizer: str, tenant: str | None) -> bool:
        from shared.services import Services

        async def remove() -> bool:
            services = Services(replace(settings, credential_mode="vault"))
            try:
                return await services.subscriptions.remove(organizer, tenant)
            finally:
                await services.aclose()

        return asyncio.run(remove())

    return unsubscribe


def _tenant(value: str) -> str:
    if not is_guid(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a tenant id (GUID)")
    return value.lower()


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m shared.organizers", description=__doc__)
    parser.add_argument("--settings", type=Path, help="local.settings.json-style file (default: environment)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="each organizer's connection health")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoking = commands.add_parser("revoke", help="forget an organizer's refresh token")
    revoking.add_argument("organizer", help="object id or UPN")
    finding = commands.add_parser("find-hash", help="the organizer behind an organizer_hash (alerts, logs)")
    finding.add_argument("hash", help="the 16-character organizer_hash")
    hashing = commands.add_parser("hash", help="the organizer_hash telemetry carries for a UPN or object id")
    hashing.add_argument("organizer", help="object id or UPN")
    device = commands.add_parser("connect-device", help="connect an organizer by device-code sign-in")
    device.add_argument("organizer", nargs="?", help="the UPN or object id expected to sign in")
    for command in (listing, revoking, device):
        command.add_argument("--tenant", type=_tenant, help="only this tenant (its id)")
    args = parser.parse_args(argv)
    if args.command == "hash":
        out.write(f"{hash_user(args.organizer)}\n")
        return 0
    try:
        settings = settings_from(args.settings)
        vault = BlobTokenVault(settings.storage, settings.token_vault_container, settings.tenant_id)
        if args.command == "list":
            return list_organizers(vault, out, as_json=args.json, tenant=args.tenant,
                                   calendar=_subscription_states(settings))
        if args.command == "find-hash":
            return find_hash(vault, args.hash, out)
        if args.command == "revoke":
            return revoke(vault, args.organizer, out, args.tenant, unsubscribe=_unsubscriber(settings))
        return connect_device(settings, vault, MsalClients(settings), args.organizer, out, tenant=args.tenant)
    except SettingsError as exc:
        out.write(f"{exc}\n")
        return 2
    except JoinLinkError as exc:
        out.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
