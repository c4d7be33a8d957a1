import pytest

from dockyard.errors import Unprocessable
from dockyard.network import hostname


def test_seed_rule_gives_web3053():
    assert hostname.render("web{o3}{o4:03d}", "10.15.3.53", "x") == "web3053"


def test_without_rule_the_instance_name_is_the_hostname():
    assert hostname.render(None, "198.18.0.5", "Web_1") == "web-1"


def test_ip_field_uses_dashes():
    assert hostname.render("h-{ip}", "198.18.0.5", "x") == "h-198-18-0-5"


@pytest.mark.parametrize("rule", ["web{o5}", "web{o3", "{name}_bad"])
def test_bad_rules_are_refused_with_a_hint(rule):
    with pytest.raises(Unprocessable) as err:
        hostname.validate_rule(rule)
    assert rule in err.value.detail
