"""The catalogue under a PaaS: what a stack's releases use cannot vanish from under a
running stack, and a release whose image is gone says so instead of failing later."""

from __future__ import annotations

from tests.api import paas_helpers
from tests.api.test_paas import _running_stack

paas = paas_helpers.paas  # the fixture


def _deployed(paas, image):
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": image})
    for _ in range(6):
        paas.step()
        paas.settle()
    assert paas.show()["deploy"]["status"] == "succeeded"


def test_what_the_current_release_uses_cannot_be_deleted(paas):
    _running_stack(paas)
    for path, what in (("/images/img", "image"), ("/flavors/small", "flavor"),
                       ("/networks/net", "network")):  # fmt: skip
        r = paas.call("DELETE", path)
        assert r.status_code == 409, r.text
        assert "shop/web" in r.json()["detail"] and what in r.json()["detail"], r.json()
    assert paas.ok("GET", "/images/img")["name"] == "img"
    assert paas.ok("GET", "/flavors/small")["name"] == "small"


def test_an_old_releases_image_goes_and_a_rollback_to_it_is_refused_clearly(paas):
    _running_stack(paas)
    _deployed(paas, "img2")
    r = paas.call("DELETE", "/images/img")  # only release 1, history, uses it now
    assert r.status_code == 204, r.text
    assert paas.call("GET", "/images/img").status_code == 404
    history = paas.ok("GET", "/apps/shop/stacks/web/releases")
    assert [(h["number"], h["image"]) for h in history] == [(1, "img"), (2, "img2")]
    r = paas.call("POST", "/apps/shop/stacks/web/rollback", json={"to": 1})
    assert r.status_code == 409 and "image 'img' was deleted" in r.json()["detail"], r.text
    assert paas.show()["current_release"] == 2
    assert len(paas.ok("GET", "/apps/shop/stacks/web/releases")) == 2  # nothing half-made
