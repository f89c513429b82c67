"""The one URL policy (intake/url_policy.py), as the service applies it at submission and the job's fetcher before
connecting."""

from __future__ import annotations

import ipaddress

import pytest

from ltxtrain.api.errors import RequestError
from ltxtrain.intake import url_policy
from ltxtrain.intake.fetch import fetch
from ltxtrain.intake.limits import IntakeLimits

LOOPBACK_SPELLINGS = ["http://0x7f000001/x.zip", "http://2130706433/x.zip", "http://127.1/x.zip",
                      "http://0177.0.0.1/x.zip", "http://0/x.zip", "http://0x7f.1/x.zip", "http://127.0.0.1./x.zip",
                      "http://localhost./x.zip", "http://LOCALHOST/x.zip", "http://a.localhost/x.zip",
                      "http://[::ffff:127.0.0.1]/x.zip", "http://[::1]:8080/x.zip", "http://[fe80::1%25eth0]/x",
                      "http://169.254.169.254/latest/meta-data", "http://0xa9fea9fe/", "http://10.1/x.zip",
                      "https://[64:ff9b::a00:1]/x"]
MALFORMED = ["http:/etc/passwd", "http:etc/passwd", "http:///x.zip", "http://", "https://user:pass@example.com/x",
             "https://user@example.com/x", "http://example.com:0/x", "http://example.com:99999/x",
             "http://exa mple.com/x", "http://example.com/a\\b", "http://example.com/\nx", "ftp://example.com/x",
             "gopher://example.com/", "javascript:alert(1)", "s3://bucket-only", "s3://bucket/dir/",
             "https://" + "a" * 9000 + ".com/"]


@pytest.fixture
def public_dns(monkeypatch):
    """Names resolve without the network: *.public → a public address, *.internal → a private one."""
    def fake(host, port):
        if host.endswith(".public"):
            return [ipaddress.ip_address("93.184.216.34")]
        if host.endswith(".internal"):
            return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")]
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(url_policy, "resolve", fake)


@pytest.mark.parametrize("text, expected", [
    ("0x7f000001", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"), ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"), ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
    ("8.8.8.8", "8.8.8.8"), ("example.com", None), ("1.2.3.4.5", None), ("256.1.1.1", None), ("08.1.1.1", None),
    ("1.2.3.256", None), ("4294967296", None)])
def test_ipv4_spellings_are_read_as_inet_aton_reads_them(text, expected):
    got = url_policy.parse_ipv4_loose(text)
    assert (str(got) if got else None) == expected


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_every_spelling_of_a_non_public_host_is_refused(url, public_dns):
    with pytest.raises(url_policy.AddressRefused):
        url_policy.check(url, allow_private=False, resolve=True)
    url_policy.check(url, allow_private=True)  # the CLI (a trusted operator) may use them


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_and_credentials_are_refused_everywhere(url):
    for allow in (False, True):
        with pytest.raises(url_policy.UrlRefused) as ei:
            url_policy.check(url, allow_private=allow, allow_local=False)
        assert not isinstance(ei.value, url_policy.AddressRefused) and str(ei.value)


def test_names_are_resolved_at_submission(public_dns):
    assert url_policy.check("https://cdn.public/a.zip", allow_private=False, resolve=True).host == "cdn.public"
    with pytest.raises(url_policy.AddressRefused, match="10.0.0.7"):  # one private address among others is enough
        url_policy.check("https://files.internal/a.zip", allow_private=False, resolve=True)
    with pytest.raises(url_policy.UrlRefused, match="could not be resolved"):
        url_policy.check("https://nowhere.invalid/a.zip", allow_private=False, resolve=True)
    # the job's fetcher does not resolve up front: it vets the addresses it dials
    url_policy.check("https://files.internal/a.zip", allow_private=False)


def test_local_paths_follow_the_private_switch(tmp_path):
    for url in (str(tmp_path / "a.zip"), (tmp_path / "a.zip").as_uri()):
        with pytest.raises(url_policy.UrlRefused, match="local paths"):
            url_policy.check(url, allow_private=False)
        assert url_policy.check(url, allow_private=True).path == str(tmp_path / "a.zip")


def test_public_urls_pass_unchanged(public_dns):
    for url in ("https://cdn.public/a.zip?X-Amz-Signature=abc", "http://93.184.216.34:8080/a.zip",
                "s3://bucket/key/a.zip", "https://[2606:4700:4700::1111]/a.zip"):
        assert url_policy.check(url, allow_private=False, resolve=True).url == url


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS[:9] + MALFORMED[:6])
def test_the_jobs_fetcher_applies_the_same_policy(url, tmp_path):
    """Whatever the service refuses at submission, the job refuses before any connection, naming the field."""
    with pytest.raises(RequestError) as ei:
        fetch(url, str(tmp_path / "a.zip"), IntakeLimits(allow_private_addresses=False, timeout_s=2),
              field="image_url")
    assert [e.loc for e in ei.value.errors] == [("body", "image_url")]
    assert list(tmp_path.iterdir()) == []
