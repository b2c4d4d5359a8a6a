"""Protocol constants and the records the Entra emulator keeps: requests, grants, sign-ins, counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
# What an admin "consented" for the app when the seed does not say otherwise.
DEFAULT_DELEGATED_SCOPES = ("VirtualAppointment.Read", "OnlineMeetings.Read")
TENANT_ALIASES = frozenset({"organizations", "common"})
REFRESH_TOKEN_LIFETIME = 90 * 24 * 3600
AUTH_CODE_LIFETIME = 300
DEVICE_CODE_LIFETIME = 900
# Entra says 5; 1 keeps MSAL's polling (and the tests) quick.
DEVICE_POLL_INTERVAL = 1
# How long an open sign-in page stays usable.
SIGN_IN_LIFETIME = 600
USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Grants a public client (no secret) may use; client_credentials and On-Behalf-Of need a secret.
PUBLIC_CLIENT_GRANTS = frozenset({"password", "refresh_token", GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE})
LIFETIME_SETTINGS = ("access_token_lifetime", "auth_code_lifetime", "device_code_lifetime")
# Refresh-token rotation: Entra's documented behaviour keeps a used refresh token valid until it expires or is
# revoked ("the platform doesn't revoke old refresh tokens when they're used"); strict makes each one single-use.
ROTATION_ENTRA = "entra"
ROTATION_STRICT = "strict"
ROTATIONS = (ROTATION_ENTRA, ROTATION_STRICT)
RESPONSE_MODES = frozenset({"query", "fragment", "form_post"})


@dataclass
class TokenRequest:
    """A parsed, client-authenticated request to the token endpoint."""

    tenant: str
    form: Mapping[str, str]
    client: dict[str, Any]
    correlation_id: str
    # False when the client sent no secret (a public client flow).
    confidential: bool = True

    @property
    def wants_client_info(self) -> bool:
        return self.form.get("client_info") == "1"


@dataclass
class RefreshGrant:
    """Server-side state behind one opaque refresh token."""

    user_oid: str
    client_id: str
    scope: str
    expires_at: float
    # Issued to a public client flow: Entra then refuses a secret on redemption (AADSTS700025).
    public: bool = False
    # The user's tenant: the refresh token is redeemed at that tenant's endpoint (or an alias).
    tenant_id: str = ""


@dataclass
class SignIn:
    """A validated authorize request waiting for the user on the sign-in page."""

    tenant: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    response_mode: str
    login_hint: str
    client_info: bool
    expires_at: float


@dataclass
class AuthCode:
    """An issued authorization code: one use, bound to its sign-in and user."""

    sign_in: SignIn
    user_oid: str
    expires_at: float
    redeemed: bool = False


@dataclass
class DeviceAuthorization:
    """One device flow: pending until a user approves (or declines) its user code."""

    client_id: str
    scope: str
    user_code: str
    expires_at: float
    user_oid: str | None = None
    declined: bool = False
    # The tenant in the device authorization request's path (an id, or an alias such as organizations).
    tenant: str = "organizations"


@dataclass(frozen=True)
class ScopeGrant:
    """A resolved scope request: one resource, its granted scopes, and the OIDC scopes."""

    resource: str
    scopes: tuple[str, ...]
    oidc: tuple[str, ...]

    @property
    def response_scope(self) -> str:
        """The `scope` of a token response: resource-qualified scopes plus OIDC ones (no offline_access)."""
        return " ".join([f"{self.resource}/{s}" for s in self.scopes]
                        + [s for s in self.oidc if s != "offline_access"])


@dataclass
class EntraStats:
    """Counters served by /_admin/stats."""

    token_requests: int = 0
    by_grant: Counter[str] = field(default_factory=Counter)
    by_user: Counter[str] = field(default_factory=Counter)
    # Tokens issued, by the user's (or app token's) tenant; token requests by the tenant in their path.
    by_tenant: Counter[str] = field(default_factory=Counter)
    by_authority: Counter[str] = field(default_factory=Counter)
    # How confidential clients proved themselves: secret, certificate, federated.
    by_credential: Counter[str] = field(default_factory=Counter)
    managed_identity_requests: int = 0


def graph_scope_name(raw: str) -> str | None:
    """Short Graph scope name for a requested scope, or None if it targets another resource."""
    for prefix in (f"{GRAPH_RESOURCE}//", f"{GRAPH_RESOURCE}/", f"{GRAPH_APP_ID}/"):
        if raw.lower().startswith(prefix):
            return raw[len(prefix):]
    if "/" not in raw and ":" not in raw:
        return raw
    return None
