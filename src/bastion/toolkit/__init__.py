"""bastion's security layer for your own FastAPI apps: the public surface.

```python
from bastion.toolkit import BastionSecurity, JwksAuthenticator, public, authenticated, require

security = BastionSecurity(
    authenticator=JwksAuthenticator(jwks_url="http://auth.internal/.well-known/jwks.json",
                                    issuer="http://auth.internal", audience="bastion"),
    permissions={"reports:read"},
)
app = FastAPI(lifespan=security.lifespan)

@app.get("/reports", dependencies=[require("reports:read")])
async def reports() -> list[str]: ...
```

Everything importable from here is the supported surface (``__all__``); the rest of the
package is bastion's own and may change between releases.
"""

from __future__ import annotations

from bastion.audit.sinks import AuditSink, LogAuditSink, SecurityEvent
from bastion.dependencies import authenticated, public, require
from bastion.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthenticated,
)
from bastion.layer import SecurityMisconfigured, TokenAuthenticator
from bastion.route_inventory import UnguardedRoutes
from bastion.schemas import StrictModel
from bastion.security.principal import Principal
from bastion.security.ratelimits import RateLimit
from bastion.security.sanitize import PlainText, SafeHTML, sanitize_html
from bastion.security.tokens import InvalidToken
from bastion.storage import StorageUnavailable
from bastion.toolkit._jwks import JwksAuthenticator
from bastion.toolkit._security import (
    BastionSecurity,
    UnconfiguredRateLimit,
    UnknownPermissions,
)

__all__ = [
    "AuditSink",
    "BastionSecurity",
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidToken",
    "JwksAuthenticator",
    "LogAuditSink",
    "NotFound",
    "PlainText",
    "Principal",
    "RateLimit",
    "SafeHTML",
    "SecurityEvent",
    "SecurityMisconfigured",
    "StorageUnavailable",
    "StrictModel",
    "TokenAuthenticator",
    "Unauthenticated",
    "UnconfiguredRateLimit",
    "UnguardedRoutes",
    "UnknownPermissions",
    "authenticated",
    "public",
    "require",
    "sanitize_html",
]
