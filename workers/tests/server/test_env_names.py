"""The worker's and the gateway's environment variables do not overlap: under `npm start` (scripts/start.sh) both
processes share one environment, so a name both read would configure the two sides at once (as INLAID_WORKER_TLS_CERT
once set the gateway's client certificate and the worker's server certificate). The worker's names are recorded from
what load_config actually reads; the gateway's from the string literals of libs/config (the only place that names
them); start.sh's from its `${NAME:-...}` reads."""

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from inlaid_worker.config import QUANTIZER_START_ENV, env_name, flag_env_names, load_config
from inlaid_worker.env_switch import SWITCHES

ROOT = Path(__file__).resolve().parents[3]


class RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def worker_names() -> set[str]:
    env = RecordingEnv()
    load_config([], env)
    return env.read


def gateway_names() -> set[str]:
    sources = [p for p in (ROOT / "libs/config/src").glob("*.ts") if not p.name.endswith(".spec.ts")]
    assert len(sources) >= 4, sources
    return {m for p in sources for m in re.findall(r"['\"](INLAID_[A-Z0-9_]+)['\"]", p.read_text())}


def start_sh_names() -> set[str]:
    return set(re.findall(r"\$\{(INLAID_[A-Z0-9_]+)", (ROOT / "scripts/start.sh").read_text()))


def test_every_flag_reads_inlaid_worker_flag_except_worker_id() -> None:
    names = flag_env_names()
    assert names["--tls-cert"] == "INLAID_WORKER_TLS_CERT"
    assert names["--tls-client-ca"] == "INLAID_WORKER_TLS_CLIENT_CA"
    assert names["--worker-id"] == "INLAID_WORKER_ID"
    for flag, name in names.items():
        if flag != "--worker-id":
            assert name == "INLAID_WORKER_" + flag[2:].upper().replace("-", "_"), flag
    assert env_name("--worker-id") == "INLAID_WORKER_ID"


def test_the_worker_reads_its_flags_switches_and_nothing_else_at_load() -> None:
    assert worker_names() == {*flag_env_names().values(), QUANTIZER_START_ENV, *SWITCHES}


def test_the_tls_env_sets_the_worker_server_certificate() -> None:
    env = {"INLAID_WORKER_TLS_CERT": "s.pem", "INLAID_WORKER_TLS_KEY": "s.key", "INLAID_WORKER_TLS_CLIENT_CA": "ca.pem"}
    cfg = load_config([], env)
    assert (cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) == ("s.pem", "s.key", "ca.pem")
    assert load_config([], {"INLAID_GATEWAY_TLS_CERT": "c.pem", "INLAID_GATEWAY_TLS_KEY": "c.key"}).tls_cert is None


def test_the_gateway_and_the_worker_share_no_variable() -> None:
    gateway = gateway_names()
    assert {"INLAID_GATEWAY_TLS_CA", "INLAID_GATEWAY_TLS_CERT", "INLAID_GATEWAY_TLS_KEY", "INLAID_TLS_CERT"} <= gateway
    assert gateway & worker_names() == set()
    # the one INLAID_WORKER_* literal the gateway has is the old CA name, which it refuses (the worker never reads it)
    assert {n for n in gateway if n.startswith("INLAID_WORKER_")} == {"INLAID_WORKER_TLS_CA"}


def test_start_sh_shares_only_the_worker_port_with_the_worker() -> None:
    names = start_sh_names()
    assert {"INLAID_MODEL", "INLAID_WORKER_PORT", "INLAID_WORKER_ARGS"} <= names
    assert names & worker_names() == {"INLAID_WORKER_PORT"}  # start.sh passes it as --port: one meaning
    assert names & gateway_names() == set()
