"""Fakes for the token vault's tests: an identity platform with strict refresh-token rotation, and MSAL over it.

They behave like the real thing where the app depends on it: a refresh token works once, an error answer
is a dict with `error` and `error_codes`, the serialized cache changes only when tokens were obtained.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
OTHER_TENANT = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"  # Fabrikam, also allowed in the sample settings
FOREIGN_TENANT = "b2c4e6a8-0d1f-4a3b-8c5e-7f9a1b3d5e60"  # Northwind, not allowed
SCHEDULER = {"oid": "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a", "upn": "scheduler@contoso.test",
             "name": "Scheduling service account", "tid": TENANT}
FABRIKAM_SCHEDULER = {"oid": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", "upn": "scheduler@fabrikam.test",
                      "name": "Fabrikam scheduling account", "tid": OTHER_TENANT}


class FakeIdentityPlatform:
    """Issues and redeems refresh tokens; each works exactly once (like the emulator)."""

    def __init__(self, *, strict: bool = True, lifetime: int = 3600) -> None:
        self.strict = strict
        self.lifetime = lifetime
        self.refresh_tokens: dict[str, dict[str, str]] = {}
        self.requests = 0
        self.answers: list[dict[str, Any]] = []  # queued error answers, served before anything else
        self.after_answer: Any = None  # hook called (outside the lock) after each token answer, before it returns
        self._lock = threading.Lock()

    def _tokens(self, user: dict[str, str], client_type: str) -> dict[str, Any]:
        rt = secrets.token_urlsafe(16)
        self.refresh_tokens[rt] = {**user, "client_type": client_type}
        return {"rt": rt, "at": f"at-{secrets.token_hex(6)}", "at_exp": time.time() + self.lifetime,
                "user": user, "client_type": client_type}

    def sign_in(self, user: dict[str, str], client_type: str = "confidential") -> dict[str, Any]:
        """A fresh cache state for the user, as after an interactive sign-in."""
        with self._lock:
            self.requests += 1
            return self._tokens(user, client_type)

    def redeem(self, state: dict[str, Any]) -> dict[str, Any]:
        """Redeem the state's refresh token: a new state, or an MSAL-style error answer."""
        with self._lock:
            self.requests += 1
            if self.answers:
                answer = self.answers.pop(0)
            elif state["rt"] not in self.refresh_tokens:
                answer = error("invalid_grant", 70008, "The refresh token has expired, was already used or revoked.")
            else:
                if self.strict:
                    del self.refresh_tokens[state["rt"]]
                answer = self._tokens(state["user"], state["client_type"])
        if self.after_answer is not None:
            self.after_answer(answer)
        return answer

    def revoke(self, oid: str) -> None:
        """Drop every refresh token of the user."""
        with self._lock:
            for rt in [k for k, v in self.refresh_tokens.items() if v["oid"] == oid]:
                del self.refresh_tokens[rt]

    def is_valid(self, cache: str) -> bool:
        """Whether a stored cache's refresh token would still be accepted."""
        return json.loads(cache)["rt"] in self.refresh_tokens


def error(name: str, code: int, description: str) -> dict[str, Any]:
    """An MSAL error answer."""
    return {"error": name, "error_codes": [code], "error_description": f"AADSTS{code}: {description}"}


class FakeApp:
    """The slice of an MSAL application the app uses, over one cache state."""

    def __init__(self, idp: FakeIdentityPlatform, state: dict[str, Any] | None, client_type: str) -> None:
        self.idp = idp
        self.state = state
        self.client_type = client_type
        self.changed = False

    def get_accounts(self, username: str | None = None) -> list[dict[str, Any]]:
        if not self.state:
            return []
        user = self.state["user"]
        return [{"home_account_id": f"{user['oid']}.{user.get('tid', TENANT)}", "username": user["upn"]}]

    def acquire_token_silent_with_error(self, scopes: list[str], account: Any, force_refresh: bool = False) -> Any:
        assert self.state is not None and account is not None
        if not force_refresh and self.state["at_exp"] - 300 > time.time():
            return {"access_token": self.state["at"], "expires_in": int(self.state["at_exp"] - time.time())}
        answer = self.idp.redeem(self.state)
        if "error" in answer:
            return answer
        self.state, self.changed = answer, True
        return {"access_token": answer["at"], "expires_in": self.idp.lifetime}

    def initiate_auth_code_flow(self, scopes: list[str], redirect_uri: str | None = None,
                                login_hint: str | None = None, prompt: str | None = None) -> dict[str, Any]:
        state = secrets.token_urlsafe(16)
        return {"state": state, "redirect_uri": redirect_uri, "scope": scopes, "login_hint": login_hint,
                "code_verifier": secrets.token_urlsafe(32), "nonce": secrets.token_hex(8),
                "auth_uri": f"https://login.example/{TENANT}/oauth2/v2.0/authorize?state={state}"}

    def acquire_token_by_auth_code_flow(self, flow: dict[str, Any], auth_response: dict[str, str]) -> Any:
        if auth_response.get("state") != flow["state"]:
            raise ValueError("state mismatch")
        user = CODES.get(auth_response.get("code", ""))
        if user is None:
            return error("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed.")
        self.state, self.changed = self.idp.sign_in(user, self.client_type), True
        return {"access_token": self.state["at"], "expires_in": self.idp.lifetime,
                "scope": "https://graph.microsoft.com/VirtualAppointment.Read openid profile",
                "id_token_claims": {"oid": user["oid"], "preferred_username": user["upn"], "name": user["name"],
                                    "tid": user.get("tid", TENANT)}}


# Authorization codes the fake platform accepts, and whose sign-in they stand for.
CODES: dict[str, dict[str, str]] = {
    "code-scheduler": SCHEDULER,
    "code-script": {"oid": "8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b", "upn": "dr.adams@contoso.test",
                    "name": "<script>alert(1)</script> Adams", "tid": TENANT},
    "code-fabrikam": FABRIKAM_SCHEDULER,
    "code-northwind": {"oid": "f4a5b6c7-d8e9-4f0a-9b1c-3d4e5f607182", "upn": "scheduler@northwind.test",
                       "name": "Northwind scheduling account", "tid": FOREIGN_TENANT},
}


class FakeMsalClients:
    """Duck-types shared.identity.vault_acquirer.MsalClients over the fake platform (one per simulated worker)."""

    def __init__(self, idp: FakeIdentityPlatform) -> None:
        self.idp = idp
        self.calls = 0
        self.tenants: list[str | None] = []  # the authority of each call (None: where organizers sign in)
        self._lock = threading.Lock()

    def run(self, client_type: str, cache: str | None, call: Any, tenant: str | None = None) -> tuple[Any, str | None]:
        with self._lock:
            self.calls += 1
            self.tenants.append(tenant)
            app = FakeApp(self.idp, json.loads(cache) if cache else None, client_type)
            result = call(app)
            return result, json.dumps(app.state) if app.changed else None


def connected_entry(idp: FakeIdentityPlatform, user: dict[str, str] = SCHEDULER, **fields: Any) -> Any:
    """A vault entry as the connect page leaves it."""
    from shared.identity.vault import VaultEntry

    state = idp.sign_in(user)
    claims = {"oid": user["oid"], "preferred_username": user["upn"], "name": user["name"],
              "tid": user.get("tid", TENANT)}
    entry = VaultEntry.connected(claims, json.dumps(state), "confidential", "VirtualAppointment.Read")
    for key, value in fields.items():
        setattr(entry, key, value)
    return entry


def expire_access_token(cache: str) -> str:
    """The same cache with its access token expired, so the next silent call must refresh."""
    state = json.loads(cache)
    state["at_exp"] = 0
    return json.dumps(state)
