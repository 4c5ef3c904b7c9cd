"""flower-superlink whose port admits only TLS clients holding the link's client certificate.

Flower 1.42 serves the Fleet, Control and Runtime APIs on one HTTP port and checks no
caller on the Control API: any local account that reaches 127.0.0.1:PORT is the admin.
This runs flower-superlink unchanged except that its TLS server (uvicorn) requires a client
certificate signed by CLIENT_CA. zk0bot gives that certificate to its nginx only, which
serves the Fleet API publicly and the Control/Runtime APIs to the admin (see
zk0.ops.nginx):

    python -m zk0.ops.private_link CLIENT_CA <flower-superlink arguments>
"""

from __future__ import annotations

import functools
import ssl
import sys

import uvicorn
from flwr.superlink.cli import flower_superlink


def require_client_certificate(run, client_ca: str):
    """uvicorn.run, refusing to serve unless TLS is on, and then only to certified clients."""

    @functools.wraps(run)
    def run_mtls(*args, **kwargs):
        if not kwargs.get("ssl_certfile"):
            sys.exit("zk0.ops.private_link: the SuperLink must run with TLS (--ssl-certfile/--ssl-keyfile)")
        return run(*args, **kwargs, ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs=client_ca)

    return run_mtls


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m zk0.ops.private_link CLIENT_CA <flower-superlink arguments>")
    client_ca = sys.argv.pop(1)
    try:  # fail here, in one line, not at the first connection
        ssl.create_default_context(cafile=client_ca)
    except (OSError, ssl.SSLError) as err:
        sys.exit(f"zk0.ops.private_link: {client_ca} is not a readable PEM certificate ({err})")
    uvicorn.run = require_client_certificate(uvicorn.run, client_ca)
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
