"""How a worker reaches the outside: the proxy and CA-bundle policy, written once.

Every LangSmith client (the SDK's `requests` Client and the generated httpx2 v2 client) and,
when LSWH_S3_PROXY=env, the presigned-object fetches follow the same rules, which are the rules
`requests` applies itself, so the two SDK stacks can never disagree:

- proxy: `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` (lower-case spellings first, as urllib reads
  them), skipped for hosts `NO_PROXY` names; decided per URL by `requests.utils.get_environ_proxies`
  and `requests.utils.select_proxy`, the functions `requests.Session` calls on every request.
- CA bundle: `REQUESTS_CA_BUNDLE`, else `CURL_CA_BUNDLE` (what `requests` reads,
  `Session.merge_environment_settings`), else `SSL_CERT_FILE` (what OpenSSL reads; `requests`
  would ignore it and use certifi); none = the library's default bundle.

httpx(2) ignores the environment's proxies whenever a transport is passed to its client
(`allow_env_proxies = trust_env and transport is None`, httpx2/_client.py), and the v2 client's
transport is the budgeted one: so the policy's answer is handed to that transport explicitly
(workers/langsmith/clients.py) instead of relying on `trust_env`.

A proxy URL may carry credentials (`http://user:pass@proxy:3128`): `describe` is the only form
of it that is ever logged.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests.utils

from lswh_core.errors import SettingsError
from lswh_core.redact import redact

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
# What deployments pass to the worker (compose, k8s, .env.example). Not SSL_CERT_FILE: a
# deployment passes unset variables as empty, and OpenSSL reads SSL_CERT_FILE="" as a file to
# load instead of its default CAs; set it in the image or pod where it is wanted.
PASSED = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE")
# requests needs PySocks and httpx2 socksio for SOCKS: neither is installed, so neither is offered.
PROXY_SCHEMES = ("http", "https")


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _get(env: Mapping[str, str], name: str) -> str:
    """Lower case first, as urllib's getproxies_environment (which requests uses) prefers it."""
    return (env.get(name.lower()) or env.get(name) or "").strip()


def _with_scheme(proxy: str) -> str:
    """A proxy as `requests` reads it: one without a scheme is http:// (prepend_scheme_if_needed)."""
    return proxy if "://" in proxy else f"http://{proxy}"


def _proxies(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable, value) of each proxy variable that is set."""
    return [(name, raw) for name in PROXY_VARIABLES if (raw := _get(env, name))]


def proxy_for(url: str) -> str | None:
    """The proxy `requests` would use for `url` with this process's environment, or None."""
    proxies = requests.utils.get_environ_proxies(url)
    proxy = requests.utils.select_proxy(url, proxies) or None
    return proxy if proxy is None else _with_scheme(proxy)


def proxy_hosts(env: Mapping[str, str] | None = None) -> list[str]:
    """The host names of the configured proxies (the S3 fetcher connects to them, not to the
    object's host, so its address check must let them through)."""
    return [host for _, raw in _proxies(_env(env)) if (host := urlsplit(_with_scheme(raw)).hostname)]


def ca_bundle(env: Mapping[str, str] | None = None) -> str | None:
    """REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else SSL_CERT_FILE; None = the default bundle."""
    env = _env(env)
    for name in CA_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def ssl_context(bundle: str | None) -> ssl.SSLContext | None:
    """A context that trusts `bundle` (for the httpx2 transport); None = the library's default."""
    if bundle is None:
        return None
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def describe(proxy: str | None) -> str:
    """A proxy URL as it may be logged: credentials and query string removed."""
    return redact(proxy) if proxy else "none"


def check(env: Mapping[str, str] | None = None) -> None:
    """At start: a proxy that is not a URL, or a CA bundle that is not there, stops the process
    (SettingsError naming the variable) instead of failing every request later. Messages never
    hold a proxy's credentials."""
    env = _env(env)
    for name, raw in _proxies(env):
        shown = describe(raw)
        try:
            parts = urlsplit(_with_scheme(raw))
            parts.port  # noqa: B018 -- raises on a port that is not a number
        except ValueError:
            raise SettingsError(f"{name} is not a proxy URL, got {shown!r}") from None
        if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
            raise SettingsError(f"{name} must be a proxy URL like http://proxy.example.com:3128, got {shown!r}")
    for name in CA_VARIABLES:
        path = env.get(name, "").strip()
        if path and not (os.path.isfile(path) or os.path.isdir(path)):
            raise SettingsError(f"{name}: CA bundle {path!r} does not exist")
        if path and not os.access(path, os.R_OK):
            raise SettingsError(f"{name}: CA bundle {path!r} is not readable")


@dataclass(frozen=True)
class Route:
    """How requests to one base URL leave: through which proxy (None = direct), trusting which CA
    bundle (None = the default)."""

    proxy: str | None
    ca_bundle: str | None

    @classmethod
    def to(cls, url: str) -> Route:
        return cls(proxy=proxy_for(url), ca_bundle=ca_bundle())

    def describe(self) -> str:
        return f"proxy {describe(self.proxy)}, CA bundle {self.ca_bundle or 'default'}"
