"""The emulated directory: tenants with their own users, the app registrations of the home tenant, who has
consented to which app in which tenant, and the managed identities of the home tenant's Azure resources.

Seed (devstack/seed/directory.json): the home tenant's fields at the top level (`tenant_id`, `display_name`,
`users`, `clients`, `admin_consented_clients`), further tenants under `customer_tenants`, and
`managed_identities`. A user may carry `"admin": true` (a Global Administrator of their tenant, who may grant
admin consent). A tenant with `"user_consent": false` lets only an admin consent to an app for its users.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from devstack.entra.errors import EntraError
from devstack.entra.model import TENANT_ALIASES

MULTI_TENANT_AUDIENCES = frozenset({"AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount"})


@dataclass
class Tenant:
    """One Microsoft Entra tenant: its users, and the apps an admin consented to for everyone in it."""

    tenant_id: str
    display_name: str
    user_consent: bool = True
    admin_consents: set[str] = field(default_factory=set)  # client ids
    seeded_consents: frozenset[str] = frozenset()


class Directory:
    """Every tenant, user, app registration and managed identity the emulator knows."""

    def __init__(self, seed: Mapping[str, Any]) -> None:
        self.home_tenant_id: str = seed["tenant_id"]
        self.tenants: dict[str, Tenant] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self._users_by_upn: dict[str, dict[str, Any]] = {}
        for raw in (seed, *seed.get("customer_tenants", [])):
            consents = frozenset(raw.get("admin_consented_clients", []))
            tenant = Tenant(raw["tenant_id"], raw.get("display_name", raw["tenant_id"]),
                            bool(raw.get("user_consent", True)), set(consents), consents)
            self.tenants[tenant.tenant_id] = tenant
            for user in raw.get("users", []):
                record = {**user, "tenant_id": tenant.tenant_id}
                self.users[record["oid"]] = record
                self._users_by_upn[record["upn"].lower()] = record
        self.clients = {c["client_id"]: {**c, "home_tenant_id": self.home_tenant_id}
                        for c in seed.get("clients", [])}
        self.managed_identities = [{"tenant_id": self.home_tenant_id, **m} for m in seed.get("managed_identities", [])]
        # The per-instance secret App Service hands a process with IDENTITY_ENDPOINT (IDENTITY_HEADER).
        self.identity_header: str = seed.get("identity_header", "")
        # (tenant, user oid, client id): what a user consented to for themselves on the sign-in page.
        self.user_consents: set[tuple[str, str, str]] = set()

    # --- users and tenants -----------------------------------------------------------------------

    def find_user(self, upn_or_oid: str) -> dict[str, Any] | None:
        """A user of any tenant, by object id or (case-insensitive) UPN."""
        return self.users.get(upn_or_oid) or self._users_by_upn.get(upn_or_oid.lower())

    def tenant(self, tenant_id: str) -> Tenant:
        """A known tenant, else invalid_tenant AADSTS90002."""
        found = self.tenants.get(tenant_id.lower()) or self.tenants.get(tenant_id)
        if found is None:
            raise EntraError(400, "invalid_tenant", 90002,
                             f"Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant ID.")
        return found

    def known_path_tenant(self, path_tenant: str) -> str:
        """The tenant segment of a request path, if it is a known tenant id or an alias."""
        if path_tenant.lower() in TENANT_ALIASES:
            return path_tenant
        return self.tenant(path_tenant).tenant_id

    def user_in(self, user: Mapping[str, Any], path_tenant: str, client: Mapping[str, Any]) -> None:
        """Refuse a user signing in through another tenant's endpoint (AADSTS50020)."""
        if path_tenant.lower() in TENANT_ALIASES or path_tenant == user["tenant_id"]:
            return
        tenant = self.tenant(path_tenant)
        raise EntraError(400, "invalid_grant", 50020,
                         f"User account '{user['upn']}' from identity provider 'https://sts.windows.net/"
                         f"{user['tenant_id']}/' does not exist in tenant '{tenant.display_name}' and cannot access "
                         f"the application '{client['client_id']}'({client.get('display_name', '')}) in that "
                         f"tenant. The account needs to be added as an external user in the tenant first. Sign "
                         f"out and sign in again with a different Azure Active Directory user account.")

    # --- app registrations -----------------------------------------------------------------------

    def is_multi_tenant(self, client: Mapping[str, Any]) -> bool:
        """Whether the app registration accepts users of other tenants."""
        return client.get("sign_in_audience", "AzureADMyOrg") in MULTI_TENANT_AUDIENCES

    def client_usable_in(self, client: Mapping[str, Any], path_tenant: str) -> None:
        """Refuse a single-tenant app outside its home tenant, as Entra does."""
        if self.is_multi_tenant(client):
            return
        if path_tenant.lower() in TENANT_ALIASES:
            raise EntraError(400, "invalid_request", 50194,
                             f"Application '{client['client_id']}'({client.get('display_name', '')}) is not "
                             f"configured as a multi-tenant application. Usage of the /{path_tenant} endpoint is "
                             f"not supported for such applications created after '10/15/2018'. Use a "
                             f"tenant-specific endpoint or configure the application to be multi-tenant.")
        if path_tenant != client["home_tenant_id"]:
            raise EntraError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client['client_id']}' was not found in the directory "
                             f"'{self.tenant(path_tenant).display_name}'. This can happen if the application has "
                             f"not been installed by the administrator of the tenant or consented to by any user "
                             f"in the tenant.")

    # --- consent ---------------------------------------------------------------------------------

    def consented(self, tenant_id: str, user_oid: str, client_id: str) -> bool:
        """An admin consented for the tenant, or this user for themselves."""
        return client_id in self.tenant(tenant_id).admin_consents or \
            (tenant_id, user_oid, client_id) in self.user_consents

    def consent_at_sign_in(self, user: Mapping[str, Any], client: Mapping[str, Any]) -> None:
        """An interactive sign-in accepts the permissions page: the user's own consent, where the tenant lets
        users consent; otherwise only an admin can (AADSTS90094)."""
        tenant = self.tenant(user["tenant_id"])
        if self.consented(tenant.tenant_id, user["oid"], client["client_id"]):
            return
        if not tenant.user_consent:
            raise EntraError(403, "access_denied", 90094,
                             f"Need admin approval: {client.get('display_name', client['client_id'])} needs "
                             f"permission to access resources in your organization that only an admin can grant. "
                             f"Please ask an admin to grant permission to this app before you can use it.")
        self.user_consents.add((tenant.tenant_id, user["oid"], client["client_id"]))

    def require_consent(self, user: Mapping[str, Any], client: Mapping[str, Any]) -> None:
        """Flows that cannot show a consent page (password, On-Behalf-Of) need consent given earlier."""
        if not self.consented(user["tenant_id"], user["oid"], client["client_id"]):
            raise EntraError(400, "invalid_grant", 65001,
                             f"The user or administrator has not consented to use the application with ID "
                             f"'{client['client_id']}' named '{client.get('display_name', '')}'. Send an "
                             f"interactive authorization request for this user and resource.")

    def reset_consents(self) -> None:
        """Back to the seeded consents (admin reset)."""
        for tenant in self.tenants.values():
            tenant.admin_consents = set(tenant.seeded_consents)
        self.user_consents.clear()

    # --- managed identities ----------------------------------------------------------------------

    def managed_identity(self, *, client_id: str | None = None, object_id: str | None = None,
                         resource_id: str | None = None) -> dict[str, Any] | None:
        """A managed identity by client id, object (principal) id or resource id; the system-assigned one when
        none is named."""
        for identity in self.managed_identities:
            if client_id is not None and identity["client_id"].lower() == client_id.lower():
                return identity
            if object_id is not None and identity["principal_id"].lower() == object_id.lower():
                return identity
            if resource_id is not None and identity.get("resource_id", "").lower() == resource_id.lower():
                return identity
        if client_id is None and object_id is None and resource_id is None:
            return next((i for i in self.managed_identities if i.get("system_assigned")), None)
        return None

    def all_users(self) -> Iterator[dict[str, Any]]:
        """Every user of every tenant."""
        return iter(self.users.values())
