"""The errors Entra answers with, as the token endpoint and the pages render them."""

from __future__ import annotations

from collections.abc import Mapping


class EntraError(Exception):
    """An OAuth error that the token endpoint renders in Entra's JSON error shape."""

    def __init__(self, status: int, error: str, code: int, description: str,
                 extra: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{error}: AADSTS{code}")
        self.status, self.error, self.code, self.description = status, error, code, description
        self.extra = dict(extra or {})

    @property
    def message(self) -> str:
        return f"AADSTS{self.code}: {self.description}"


def invalid_grant(code: int, description: str) -> EntraError:
    """An invalid_grant error with the given AADSTS code."""
    return EntraError(400, "invalid_grant", code, description)


EXPIRED_GRANT = ("The provided authorization code or refresh token has expired due to inactivity, "
                 "was already used or was revoked.")


def secret_required() -> EntraError:
    """invalid_client AADSTS7000218: a confidential client sent no secret."""
    return EntraError(401, "invalid_client", 7000218,
                      "The request body must contain the following parameter: 'client_assertion' or "
                      "'client_secret'.")


def public_client_with_secret() -> EntraError:
    """invalid_client AADSTS700025: a public client sent a secret."""
    return EntraError(401, "invalid_client", 700025,
                      "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")


def require(form: Mapping[str, str], name: str) -> str:
    """The named request parameter, else invalid_request AADSTS900144."""
    value = form.get(name)
    if not value:
        raise EntraError(400, "invalid_request", 900144,
                         f"The request body must contain the following parameter: '{name}'.")
    return value
