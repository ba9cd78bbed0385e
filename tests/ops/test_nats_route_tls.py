"""The NATS cluster's routes run over mutual TLS: its nodes join each other with
certificates from the cluster's CA, and a machine without one cannot join, read the
cluster's traffic or put its own into it."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from tests.kit.nats import (
    NatsCluster,
    NatsNode,
    RouteTls,
    drain,
    next_data,
    publish_until_received,
    route_greeting,
)
from tests.kit.wait import eventually_blocking

REFUSED = "TLS route handshake error"


async def test_the_cluster_routes_over_mutual_tls_and_carries_a_message_across(
    nats_cluster: NatsCluster,
) -> None:
    """The test cluster's three nodes route to each other over TLS with certificates from
    their own CA: each node has a route to the other two; each route port answers only
    inside TLS, and only to a peer showing a certificate from that CA (a plain connection
    and a TLS one without a certificate get nothing). A message published on node 1
    reaches a subscriber on node 3."""
    ids = {node.server_id() for node in nats_cluster.nodes}
    for node in nats_cluster.nodes:
        routez = node.routez()
        assert routez["num_routes"] == 2, routez
        assert {route["remote_id"] for route in routez["routes"]} == ids - {node.server_id()}
        assert node.route_tls is not None
        greeting = route_greeting(node.host, node.ports.cluster, node.route_tls.client_context())
        assert greeting.startswith(b"INFO "), greeting
        info = json.loads(greeting[5:])
        assert (info["tls_required"], info["tls_verify"]) == (True, True), info
        assert route_greeting(node.host, node.ports.cluster, None) == b""
        anonymous = ssl.create_default_context(cafile=str(node.route_tls.ca_file))
        try:
            refused = route_greeting(node.host, node.ports.cluster, anonymous)
        except ssl.SSLError as exc:
            refused = str(exc).encode()
        assert not refused.startswith(b"INFO"), refused

    receiver = await nats.connect(nats_cluster.nodes[2].nats_url, allow_reconnect=False)
    sender = await nats.connect(nats_cluster.nodes[0].nats_url, allow_reconnect=False)
    try:
        inbox = await receiver.subscribe("vr.7.d")
        await receiver.flush()
        await publish_until_received(sender, inbox, "vr.7.d", b"across")
    finally:
        await sender.close()
        await receiver.close()


def foreign_ca(cluster: NatsCluster, name: str) -> RouteTls:
    """A node certificate from a CA of its own, trusting only that CA."""
    return RouteTls.signed_by(cluster.directory / "other-ca", name)


def foreign_certificate(cluster: NatsCluster, name: str) -> RouteTls:
    """A node certificate from another CA, trusting the cluster's CA (its certificate is
    public): the node accepts the members, the members must refuse it."""
    assert cluster.route_ca is not None
    own = RouteTls.signed_by(cluster.directory / "other-ca", name)
    return RouteTls(own.cert_file, own.key_file, cluster.route_ca / "ca.pem")


def no_tls(cluster: NatsCluster, name: str) -> None:
    """No TLS on the node's routes at all."""
    return None


@pytest.mark.parametrize(
    "credentials",
    [foreign_ca, foreign_certificate, no_tls],
    ids=["another-ca", "another-ca-certificate-trusting-ours", "no-tls"],
)
async def test_a_node_without_a_certificate_from_the_cluster_ca_cannot_join(
    nats_cluster: NatsCluster, credentials: Callable[[NatsCluster, str], RouteTls | None]
) -> None:
    """A fourth nats-server, configured with the cluster's name and every member's route
    address, starts with a certificate from another CA (trusting that CA, or the cluster's)
    or with no TLS at all. Every member refuses its route handshakes again and again; no
    member counts it as a route and it has no route itself. What is published on it does
    not reach a subscriber on the cluster, and what the cluster carries does not reach a
    subscriber on it."""
    members = nats_cluster.nodes
    before = [node.log().count(REFUSED) for node in members]
    outsider: NatsNode = nats_cluster.outsider("x", credentials(nats_cluster, "x"))
    outsider.start()

    def refused_twice_by_every_member() -> bool:
        return all(
            node.log().count(REFUSED) >= count + 2
            for node, count in zip(members, before, strict=True)
        )

    eventually_blocking(refused_twice_by_every_member, 20, 0.1)
    outsider_id = outsider.server_id()
    for node in members:
        routez = node.routez()
        assert routez["num_routes"] == 2, routez
        assert outsider_id not in {route["remote_id"] for route in routez["routes"]}
    assert outsider.routez()["num_routes"] == 0

    on_cluster = await nats.connect(members[2].nats_url, allow_reconnect=False)
    on_outsider = await nats.connect(outsider.nats_url, allow_reconnect=False)
    member_publisher = await nats.connect(members[0].nats_url, allow_reconnect=False)
    try:
        cluster_inbox = await on_cluster.subscribe("vr.7.u")
        outsider_inbox = await on_outsider.subscribe("vr.7.u")
        await on_cluster.flush()
        await on_outsider.flush()
        # published on the outsider: its own subscriber gets it, so it was published
        await on_outsider.publish("vr.7.u", b"injected")
        await on_outsider.flush()
        assert await next_data(outsider_inbox, 5) == b"injected"
        # then published on member 1: it crosses the cluster's routes to member 3
        await publish_until_received(member_publisher, cluster_inbox, "vr.7.u", b"genuine")
        # what else member 3 got: at most spare copies of the genuine message
        assert set(await drain(cluster_inbox, 0.5)) <= {b"genuine"}
        assert await drain(outsider_inbox, 0.5) == []
    finally:
        await member_publisher.close()
        await on_outsider.close()
        await on_cluster.close()
    assert outsider.routez()["num_routes"] == 0
    assert all(node.routez()["num_routes"] == 2 for node in members)
    assert outsider.running, outsider.log()[-2000:]


@pytest.mark.broker
def test_the_kit_can_still_make_a_cluster_with_routes_in_the_clear(tmp_path: Path) -> None:
    """NatsCluster(route_tls=False) writes no TLS block: its route ports answer INFO in
    the clear (the default, TLS, is what every cluster test above relies on)."""
    cluster = NatsCluster(tmp_path / "nats", route_tls=False)
    with cluster:
        node = cluster.nodes[0]
        assert node.route_tls is None
        assert "tls" not in node.config_path.read_text()
        assert route_greeting(node.host, node.ports.cluster, None).startswith(b"INFO ")
