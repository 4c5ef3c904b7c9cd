"""The server's two nginx configurations, generated on every `zk0bot server start`.

The proxies, the only clients of the SuperLink (they hold the link's client certificate), are
two nginx instances with their own workers, so that no public traffic can take the connections
the admin path needs. Public port (nginx.conf): connections counted per client address as they
are accepted, then TLS with zk0's server certificate, the Fleet API only, request limits per
client address, timeouts short enough that idle or half-sent connections are dropped within
seconds. Admin port (admin.conf, 127.0.0.1): the Control API for requests bearing the admin's
token, the Runtime API (where Flower checks the SuperExec's secret and each run's token), and
the SuperLink's /health.

    python -m zk0.ops.nginx public|admin SERVER_DIR --host H --port P --link-port L \\
        --admin-port A --door-port D --mode secure|insecure [--stream-module SO]

prints one configuration (zk0bot writes it with write_file: whole or not at all, 0600).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

# The proxy's budget from this host: one worker per core for the public port, and as many
# connections per worker as the file-descriptor limit allows (a public connection holds up to
# four descriptors: the client's, the stream's hop to the http server, that hop's other end and
# a request's upstream; worker_connections counts each). Capped so that the connection tables
# nginx allocates up front stay small (~0.5 KB each).
MAX_FILES = 32768
# Connections one client address may hold at the public port: a SuperNode keeps a few
# kept-alive ones (one per request it has in flight, ~4), so a dozen nodes behind one NAT
# address fit; a flood from one address holds no more.
ADDRESS_CONNECTIONS = 128


@dataclass(frozen=True)
class Proxy:
    server_dir: Path
    host: str
    port: int
    link_port: int
    admin_port: int
    door_port: int
    insecure: bool
    stream_module: str = ""
    # What the host gives (see host_proxy): nginx's worker user when run as root, cores, descriptors.
    user: str = ""
    workers: int = 1
    files: int = MAX_FILES


def host_proxy(**settings) -> Proxy:
    """A Proxy sized from this host: its cores, its hard descriptor limit, and as root the
    workers' user (www-data, else nobody)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = MAX_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_FILES)
    user = ""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("www-data")
            user = "www-data www-data"
        except KeyError:
            user = f"nobody {grp.getgrgid(pwd.getpwnam('nobody').pw_gid).gr_name}"
    return Proxy(**settings, user=user, workers=len(os.sched_getaffinity(0)), files=files)


def _common(proxy: Proxy, tmp: Path, log: Path) -> str:
    """What both instances share: temporary files, the log of refused requests, the upstream."""
    return COMMON % {"tmp": tmp, "log": log, "link_port": proxy.link_port}


def _upstream(proxy: Proxy) -> str:
    return UPSTREAM % {"certs": proxy.server_dir / "certs"}


def _head(proxy: Proxy) -> dict:
    certs = proxy.server_dir / "certs"
    return {
        "dir": proxy.server_dir / "proxy",
        "server_dir": proxy.server_dir,
        "user_line": f"user {proxy.user};" if proxy.user else "",
        "tls_lines": TLS_LINES % {"certs": certs},
        "upstream": _upstream(proxy),
    }


def public_conf(proxy: Proxy) -> str:
    values = _head(proxy)
    listen = f"listen 127.0.0.1:{proxy.door_port}{'' if proxy.insecure else ' ssl'} proxy_protocol;"
    return PUBLIC % {
        **values,
        "load_stream": f"load_module {proxy.stream_module};" if proxy.stream_module else "",
        "workers": proxy.workers,
        "files": proxy.files,
        "connections": proxy.files - 64,
        "address_connections": ADDRESS_CONNECTIONS,
        "host": proxy.host,
        "port": proxy.port,
        "door_port": proxy.door_port,
        "common": _common(proxy, values["dir"] / "tmp", proxy.server_dir / "proxy.log"),
        "listen": listen,
        "public_tls": "" if proxy.insecure else values["tls_lines"],
    }


def admin_conf(proxy: Proxy, token: str) -> str:
    values = _head(proxy)
    return ADMIN % {
        **values,
        "common": _common(proxy, values["dir"] / "admin-tmp", proxy.server_dir / "admin-proxy.log"),
        "admin_port": proxy.admin_port,
        "token": token,
    }


TLS_LINES = """ssl_certificate %(certs)s/server.pem;
    ssl_certificate_key %(certs)s/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;"""

# Kept-alive TLS connections to the SuperLink: a broadcast to hundreds of nodes reuses them
# instead of opening one (and a handshake) per request.
UPSTREAM = """proxy_pass https://zk0_link;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_trusted_certificate %(certs)s/ca.crt;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
      proxy_ssl_certificate %(certs)s/link-client.crt;
      proxy_ssl_certificate_key %(certs)s/link-client.key;"""

COMMON = """  client_body_temp_path %(tmp)s/body;
  proxy_temp_path %(tmp)s/proxy;
  fastcgi_temp_path %(tmp)s/fastcgi;
  uwsgi_temp_path %(tmp)s/uwsgi;
  scgi_temp_path %(tmp)s/scgi;
  # Refused requests are logged (who tried what); Fleet traffic is not.
  map $status $zk0_refused { ~^[23] 0; default 1; }
  log_format zk0 '$time_iso8601 $remote_addr "$request" $status';
  access_log %(log)s zk0 if=$zk0_refused;
  upstream zk0_link {
    server 127.0.0.1:%(link_port)s;
    keepalive 64;
    keepalive_timeout 60s;
  }"""

PUBLIC = """# Generated by zk0bot server start; rewritten on every start.
%(load_stream)s
%(user_line)s
worker_processes %(workers)s;
worker_rlimit_nofile %(files)s;
pid %(dir)s/nginx.pid;
daemon off;
error_log %(server_dir)s/proxy.log warn;
events { worker_connections %(connections)s; }
# Every connection to the public port is counted per client address the moment it is
# accepted, before TLS or a request (http's limit_conn sees only requests in progress): one
# address holds at most %(address_connections)s, idle, half-sent or busy, and the next is closed at once.
# The bytes go on to the http server below on a loopback port, the client's address ahead of
# them in a PROXY protocol header (a local account could reach that port too, and claim any
# address there; it reaches only what the public port serves).
stream {
  limit_conn_zone $binary_remote_addr zone=zk0_tcp:10m;
  # Not one log line per refused connection: a flood would push everything else out of the capped log.
  limit_conn_log_level info;
  server {
    listen %(host)s:%(port)s;
    limit_conn zk0_tcp %(address_connections)s;
    proxy_pass 127.0.0.1:%(door_port)s;
    proxy_protocol on;
    proxy_connect_timeout 5s;
    proxy_timeout 900s;
  }
}
http {
%(common)s
  # What crossed the public port, per request (bytes received and sent): the federation's traffic.
  log_format zk0_bytes '$time_iso8601 $remote_addr $uri $status $request_length $bytes_sent';
  # A connection that sends no complete request header within 10 s (this also bounds the TLS
  # handshake), stalls a body or a reply for 20 s, or idles 20 s between requests is closed
  # and its memory freed at once. A SuperNode sends each request whole and polls every few
  # seconds over one kept-alive connection.
  client_header_timeout 10s;
  client_body_timeout 20s;
  send_timeout 20s;
  keepalive_timeout 20s;
  lingering_timeout 2s;
  reset_timedout_connection on;
  # Bodies stream to the SuperLink, which reads each whole before it checks the node: the
  # size cap is what bounds that. Flower moves arrays in 5 MiB chunks (its
  # FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE); the largest Fleet request is a push-object of one
  # chunk, 5,242,995 bytes measured (5 MiB + 115 bytes of protobuf); records other than
  # arrays (metrics, configs, zk0's statistics) travel whole and are KBs. 8 MiB leaves 60%%.
  client_max_body_size 8m;
  client_header_buffer_size 1k;
  large_client_header_buffers 4 8k;
  proxy_request_buffering off;
  proxy_buffering off;
  proxy_read_timeout 900s;
  proxy_send_timeout 900s;
  # Per client address. A SuperNode keeps at most ~4 requests in flight (2 concurrent object
  # pushes or pulls, a heartbeat, its poll); a tiny zk0 run's busiest second was 117 requests
  # from one address (3 nodes); a real model's message is ~1,000 objects and chunks per node.
  # The limits leave room for a dozen nodes behind one NAT address. Refusals are 503, which
  # Flower's SuperNode retries with backoff (429 would fail its round): a node over the limit
  # is slowed, a flood is turned away before it reaches the SuperLink. limit_conn here counts
  # requests in progress; the stream above counts connections.
  limit_req_zone $binary_remote_addr zone=zk0_rate:10m rate=500r/s;
  limit_conn_zone $binary_remote_addr zone=zk0_conn:10m;
  limit_req_status 503;
  limit_conn_status 503;
  server {
    %(listen)s
    %(public_tls)s
    set_real_ip_from 127.0.0.1;
    real_ip_header proxy_protocol;
    limit_req zone=zk0_rate burst=2000 nodelay;
    limit_conn zk0_conn 64;
    location /v1/fleet/ {
      access_log %(server_dir)s/fleet-traffic.log zk0_bytes;
      %(upstream)s
    }
    # deny (access phase) rather than return (rewrite phase): the limits above apply first.
    location / {
      deny all;
      error_log %(server_dir)s/proxy.log crit;  # the access log has each refusal already
    }
    error_page 403 /zk0-refused;
    location = /zk0-refused {
      internal;
      return 403 "zk0: only the Fleet API is served on this port\\n";
    }
  }
}
"""

ADMIN = """# Generated by zk0bot server start; rewritten on every start. Holds the admin's token: 0600.
%(user_line)s
worker_processes 1;
pid %(dir)s/admin.pid;
daemon off;
error_log %(server_dir)s/admin-proxy.log warn;
events { worker_connections 1024; }
http {
%(common)s
  proxy_request_buffering off;
  proxy_buffering off;
  proxy_read_timeout 900s;
  proxy_send_timeout 900s;
  server {
    listen 127.0.0.1:%(admin_port)s ssl;
    %(tls_lines)s
    # A run's FAB (at most 10 MiB, flwr's FAB_MAX_SIZE) travels in one Control request.
    client_max_body_size 16m;
    location /v1/control/ {
      if ($http_authorization != "Bearer %(token)s") {
        return 401 "zk0: the Control API answers the server admin only\\n";
      }
      proxy_set_header Authorization "";
      %(upstream)s
    }
    location /v1/runtime/ {
      %(upstream)s
    }
    location = /health {
      %(upstream)s
    }
    location / {
      return 403 "zk0: not served\\n";
    }
  }
}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk0.ops.nginx", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("public", "admin"))
    parser.add_argument("server_dir", type=Path)
    parser.add_argument("--host", required=True)
    for port in ("port", "link-port", "admin-port", "door-port"):
        parser.add_argument(f"--{port}", type=int, required=True)
    parser.add_argument("--mode", choices=("secure", "insecure"), required=True)
    parser.add_argument("--stream-module", default="", help="nginx's stream module to load (empty: built in)")
    args = parser.parse_args(argv)
    proxy = host_proxy(server_dir=args.server_dir, host=args.host, port=args.port, link_port=args.link_port,
                       admin_port=args.admin_port, door_port=args.door_port, insecure=args.mode == "insecure",
                       stream_module=args.stream_module)
    if args.which == "public":
        sys.stdout.write(public_conf(proxy))
    else:
        sys.stdout.write(admin_conf(proxy, (args.server_dir / "admin.token").read_text().rstrip("\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
