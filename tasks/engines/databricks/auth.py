"""OAuth machine-to-machine for a Databricks service principal (:class:`ClientCredentials`)."""
from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

from .errors import OAuthError

OAUTH_TOKEN_PATH = "/oidc/v1/token"  # a workspace's OAuth token endpoint
OAUTH_SCOPE = "all-apis"  # what the Databricks SDK asks for a service principal
OAUTH_TIMEOUT_S = 15.0
OAUTH_EARLY_REFRESH_S = 60.0  # a token is renewed this long before it expires


class ClientCredentials:
    """OAuth M2M for a Databricks service principal, as the connector's
    ``credentials_provider``: the client-credentials grant at the workspace's token
    endpoint (``https://<host>/oidc/v1/token``, the client authenticated with HTTP Basic,
    scope ``all-apis``: what the Databricks SDK's ``oauth_service_principal`` sends), the
    token kept until a minute before it expires. The connector asks for headers before
    each request (and caches the token itself until its ``exp``).

    The connector alone has no provider for Databricks-managed service principals (its
    ``auth_type="azure-sp-m2m"`` is Microsoft Entra's); its documentation points at the
    databricks-sdk, which this makes unnecessary. TLS trust is the process's default
    (``SSL_CERT_FILE`` is honoured), proxies come from ``HTTPS_PROXY`` as for urllib.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str,
                 timeout: float = OAUTH_TIMEOUT_S) -> None:
        self.token_url, self.client_id = token_url, client_id
        self._secret, self._timeout = client_secret, timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.fetched = 0  # tokens fetched (for tests and logs)

    def auth_type(self) -> str:
        return "oauth-m2m"

    def __call__(self, *args, **kwargs):
        return self.headers

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, expires_in = self._fetch()
                self._renew_at = time.monotonic() + max(0.0, expires_in - OAUTH_EARLY_REFRESH_S)
                self.fetched += 1
            return self._token

    def _fetch(self) -> tuple[str, float]:
        body = urlencode({"grant_type": "client_credentials", "scope": OAUTH_SCOPE}).encode()
        basic = base64.b64encode(f"{self.client_id}:{self._secret}".encode()).decode()
        request = urllib.request.Request(
            self.token_url, data=body, method="POST",
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded",
                     "User-Agent": _user_agent()})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout,
                                        context=ssl.create_default_context()) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise OAuthError(
                f"the OAuth token endpoint {self.token_url} refused client {self.client_id}: "
                f"HTTP {exc.code} {_oauth_detail(exc)}".rstrip(), status=exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OAuthError(f"no OAuth token from {self.token_url}: {exc}") from None
        token = data.get("access_token") if isinstance(data, dict) else None
        if not token:
            raise OAuthError(f"the OAuth token endpoint {self.token_url} answered no access_token")
        try:
            expires_in = float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in


def _oauth_detail(error: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        return error.reason or ""
    if not isinstance(data, dict):
        return ""
    return " ".join(str(data[k]) for k in ("error", "error_description") if data.get(k))


def _user_agent() -> str:
    from .engine import USER_AGENT

    return USER_AGENT
