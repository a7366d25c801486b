"""The proxy and CA-bundle policy (lswh_core/egress.py): what requests decides, decided once for
every client. Each row is checked against the policy and against a real `requests.Session`'s own
reading of the same environment."""

from __future__ import annotations

import pytest
import requests
import requests.utils

from lswh_core import egress
from lswh_core.errors import SettingsError
from lswh_core.settings import Settings
from workers.langsmith.clients import ClientConfig

PROXY = "http://corp-user:pw-123@proxy.corp.example:3128"
OTHER = "http://other-proxy.corp.example:8080"
EGRESS_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", *egress.CA_VARIABLES)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited proxy or CA variable (this machine sets some CA bundles)."""
    for name in EGRESS_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# (environment, URL, the proxy it goes through or None)
TABLE = [
    ({}, "https://api.smith.langchain.com", None),
    ({"HTTPS_PROXY": PROXY}, "https://api.smith.langchain.com", PROXY),
    ({"HTTPS_PROXY": PROXY}, "http://langsmith.internal", None),  # http:// takes HTTP_PROXY only
    ({"HTTP_PROXY": PROXY}, "http://langsmith.internal:1984", PROXY),
    ({"HTTP_PROXY": PROXY, "HTTPS_PROXY": OTHER}, "https://api.smith.langchain.com", OTHER),
    ({"ALL_PROXY": PROXY}, "https://eu.api.smith.langchain.com", PROXY),
    ({"https_proxy": OTHER, "HTTPS_PROXY": PROXY}, "https://api.smith.langchain.com", OTHER),  # lower case wins
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "api.smith.langchain.com"}, "https://api.smith.langchain.com", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".langchain.com"}, "https://api.smith.langchain.com", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "langchain.com"}, "https://api.smith.langchain.com", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "example.com"}, "https://api.smith.langchain.com", PROXY),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, "http://10.1.2.3:1984", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "*"}, "http://127.0.0.1:1984", None),
    ({"HTTP_PROXY": PROXY, "no_proxy": "127.0.0.1,localhost"}, "http://localhost:1984", None),
    ({"HTTP_PROXY": "proxy.corp.example:3128"}, "http://langsmith.internal", "http://proxy.corp.example:3128"),
]


@pytest.mark.parametrize(("env", "url", "expected"), TABLE, ids=[f"{i}" for i in range(len(TABLE))])
def test_the_proxy_for_a_url_is_the_one_requests_would_use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                           url: str, expected: str | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert egress.proxy_for(url) == expected
    session = requests.Session()
    proxies = session.merge_environment_settings(url, {}, None, None, None)["proxies"]
    theirs = requests.utils.select_proxy(url, proxies)
    assert (theirs if theirs is None or "://" in theirs else f"http://{theirs}") == expected


CA_TABLE = [
    ({}, None),
    ({"SSL_CERT_FILE": "/c"}, "/c"),
    ({"CURL_CA_BUNDLE": "/b", "SSL_CERT_FILE": "/c"}, "/b"),
    ({"REQUESTS_CA_BUNDLE": "/a", "CURL_CA_BUNDLE": "/b", "SSL_CERT_FILE": "/c"}, "/a"),
    ({"REQUESTS_CA_BUNDLE": "", "SSL_CERT_FILE": "/c"}, "/c"),  # empty = unset
]


@pytest.mark.parametrize(("env", "expected"), CA_TABLE)
def test_the_ca_bundle_is_requests_then_curl_then_openssls(env: dict[str, str], expected: str | None) -> None:
    assert egress.ca_bundle(env) == expected


def test_requests_reads_its_two_ca_variables_in_the_same_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/a")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/b")
    verify = requests.Session().merge_environment_settings("https://x", {}, None, None, None)["verify"]
    assert verify == egress.ca_bundle() == "/a"


def test_a_proxy_is_logged_without_its_credentials() -> None:
    assert egress.describe(PROXY) == "http://<redacted>@proxy.corp.example:3128"
    assert egress.describe(None) == "none"


@pytest.mark.parametrize(("env", "named"), [
    ({"HTTPS_PROXY": "ftp://corp-user:pw-123@proxy.corp.example"}, "HTTPS_PROXY"),
    ({"http_proxy": "http://corp-user:pw-123@proxy:port"}, "HTTP_PROXY"),
    ({"ALL_PROXY": "socks5://proxy.corp.example:1080"}, "ALL_PROXY"),
    ({"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"}, "REQUESTS_CA_BUNDLE"),
    ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE"),
])
def test_a_bad_proxy_or_ca_bundle_is_refused_naming_it_and_hiding_credentials(env: dict[str, str],
                                                                             named: str) -> None:
    with pytest.raises(SettingsError, match=named) as info:
        egress.check(env)
    assert "pw-123" not in str(info.value)


def test_good_proxies_and_an_existing_bundle_pass() -> None:
    bundle = __file__  # any readable file
    egress.check({"HTTPS_PROXY": PROXY, "HTTP_PROXY": "proxy.corp.example:3128", "REQUESTS_CA_BUNDLE": bundle})


def test_proxy_hosts_are_the_configured_proxies_hosts() -> None:
    assert egress.proxy_hosts({"HTTPS_PROXY": PROXY, "http_proxy": "10.0.0.9:3128"}) == [
        "10.0.0.9", "proxy.corp.example"]


def test_the_client_config_routes_its_endpoint_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", "langsmith.internal")
    workspace = "2ebda79f-2946-4491-a9ad-d642f49e0815"
    settings = Settings.from_env({"LANGSMITH_WORKSPACE_ID": workspace})
    cloud = ClientConfig.of(settings, {"LANGSMITH_ENDPOINT": "https://api.smith.langchain.com",
                                       "LANGSMITH_API_KEY": "lsv2_sk_secret"})
    assert (cloud.workspace_id, cloud.egress.proxy) == (workspace, PROXY)
    own = ClientConfig.of(settings, {"LANGSMITH_ENDPOINT": "https://langsmith.internal/api/v1"})
    assert own.egress.proxy is None
    described = cloud.describe()
    assert "lsv2_sk_secret" not in described and "pw-123" not in described and workspace in described


def test_backfill_refuses_a_bad_proxy_at_start_like_the_worker() -> None:
    from tests.support.commands import run_lswh

    result = run_lswh({"HTTPS_PROXY": "ftp://corp-user:pw-123@proxy", "https_proxy": "",
                       "REDIS_URL": "redis://127.0.0.1:1/0"}, "backfill", "--rule", "r", "--since", "1h")
    assert result.returncode == 2, result.stderr
    assert "HTTPS_PROXY" in result.stderr and "pw-123" not in result.stderr + result.stdout
