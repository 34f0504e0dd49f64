"""Syntax rules install applies before touching the network: Region, tags, proxy, URLs."""

from __future__ import annotations

import pytest

from snapship.install import InstallError, check_proxy, check_region, check_url, parse_tags

GOOD_REGIONS = ["us-east-1", "eu-west-3", "us-gov-west-1", "us-isob-east-1", "cn-north-1",
                "eusc-de-east-1", "ap-southeast-5", "il-central-1"]
BAD_REGIONS = ["moon-central-9x", "mars-1", "US-EAST-1", "us_east_1", "useast1", "us-east-", ""]


@pytest.mark.parametrize("region", GOOD_REGIONS)
def test_region_names_accepted(region: str) -> None:
    assert check_region(f" {region} ") == region


@pytest.mark.parametrize("region", BAD_REGIONS)
def test_region_names_refused(region: str) -> None:
    with pytest.raises(InstallError, match="Region"):
        check_region(region)


def test_tags_follow_aws_rules() -> None:
    assert parse_tags(["a=1", "owner=storage team", "path=/x:y+z@w", "empty="], "--t") == {
        "a": "1", "owner": "storage team", "path": "/x:y+z@w", "empty": ""}
    assert parse_tags(["k=v=w"], "--t") == {"k": "v=w"}  # only the first = splits
    for bad, why in [
        (["novalue"], "not KEY=VALUE"), (["=v"], "empty key"), (["aws:x=1"], "reserves"),
        (["k=v", "k=w"], "twice"), (["k" * 129 + "=v"], "128"), (["k=" + "v" * 257], "256"),
        (["k=a#b"], "characters"), ([f"k{i}=v" for i in range(51)], "at most 50"),
    ]:
        with pytest.raises(InstallError, match=why):
            parse_tags(bad, "--t")


def test_proxy_needs_scheme_host_port_and_trailing_slash() -> None:
    assert check_proxy("http://proxy.lab:3128/") == "http://proxy.lab:3128/"
    assert check_proxy("") == ""
    with pytest.raises(InstallError, match="trailing slash"):
        check_proxy("http://proxy.lab:3128")
    with pytest.raises(InstallError, match="look like"):
        check_proxy("proxy.lab:3128/")


def test_endpoint_urls() -> None:
    assert check_url("https://vpce-1.mgn.eu-west-1.vpce.amazonaws.com", "--endpoint")
    with pytest.raises(InstallError, match="--s3-endpoint"):
        check_url("s3.example", "--s3-endpoint")


def test_region_unknown_to_botocore_needs_the_explicit_flag() -> None:
    # Well-formed, but no Region the installed botocore knows: a typo until said otherwise.
    with pytest.raises(InstallError, match="--allow-unknown-region") as refused:
        check_region("eu-west-9")
    assert "botocore" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(InstallError, match="Did you mean us-east-1"):
        check_region("us-east-11")
    assert check_region("eu-west-9", allow_unknown=True) == "eu-west-9"
